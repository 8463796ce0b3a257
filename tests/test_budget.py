"""Training to a wall-clock budget: the fitted schedule, the step-time probe, exact resume."""

import json
import types

import pytest
import torch
from transformers import get_scheduler

from test_trainer import cfg_for, weights
from rerankforge.errors import ConfigError
from rerankforge.train import train
from rerankforge.train.budget import FittedSchedule, TimeBudget


@pytest.mark.parametrize("shape", ["linear", "cosine", "constant_with_warmup", "constant"])
def test_fitted_schedule_matches_transformers(shape):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = get_scheduler(shape, opt, num_warmup_steps=0 if shape == "constant" else 10, num_training_steps=100)
    ours = FittedSchedule(shape, 0.1, 100)
    expected = []
    for _ in range(100):
        expected.append(opt.param_groups[0]["lr"])
        ref.step()
    assert [ours(s) for s in range(100)] == pytest.approx(expected, abs=1e-12)


def test_fitted_schedule_can_be_shortened_and_rejects_unknown_shapes():
    sched = FittedSchedule("linear", 0.1, 1000)
    sched.total = 200
    assert sched(10) == pytest.approx(0.5)  # warm-up is 10% of the new length
    assert sched(200) == 0.0 and sched(110) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="polynomial"):
        FittedSchedule("polynomial", 0.1, 10)
    with pytest.raises(ConfigError):
        TimeBudget(0)


def test_time_budget_probe_fits_the_remaining_time():
    budget = TimeBudget(1.0, start=0.0, skip_steps=5, probe_steps=20, margin=0.0)
    fitted = [budget.observe(s, 1.0 + 0.1 * s) for s in range(1, 40)]
    # steps 5..25 took 2 s -> 0.1 s/step; at step 25 (t = 3.5 s) 56.5 s are left -> 565 more steps
    assert fitted[24] == 25 + 565
    assert [f for i, f in enumerate(fitted) if i != 24] == [None] * 38
    assert not budget.expired(59.9) and budget.expired(60.0)


class FakeClock:
    """perf_counter() advancing a fixed amount per call: a deterministic 'slow machine'."""

    def __init__(self, tick):
        self.t, self.tick = 0.0, tick

    def perf_counter(self):
        self.t += self.tick
        return self.t


@pytest.fixture
def fake_clock(monkeypatch):
    import rerankforge.train.trainer as loop

    clock = FakeClock(0.05)
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    return clock


def test_training_stops_within_budget_with_the_schedule_run_out(tmp_path, tiny_bert_dir, fake_clock):
    # 12 groups / batch 2 = 6 steps per epoch; 50 epochs would be 300 steps
    cfg = cfg_for(tmp_path, tiny_bert_dir, "run", "optim.epochs=50", "optim.max_minutes=0.2", "optim.warmup_ratio=0.1")
    train(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    fitted = summary["fitted_steps"]
    assert 25 < fitted < 300 and summary["global_step"] == fitted and summary["stopped_by_budget"] is None
    # after the fit (step 25) the learning rate follows the schedule of the fitted length to 0
    fitted_curve = FittedSchedule("linear", 0.1, fitted)
    after = [(h["step"], h["lr"]) for h in summary["history"] if h["step"] > 25]
    assert [lr for _, lr in after] == pytest.approx([1e-3 * fitted_curve(s) for s, _ in after])
    assert after[-1] == (fitted, 0.0)


def test_budget_never_lengthens_training(tmp_path, tiny_bert_dir, fake_clock):
    cfg = cfg_for(tmp_path, tiny_bert_dir, "run", "optim.epochs=6", "optim.max_minutes=60")
    train(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["global_step"] == 36 and summary["fitted_steps"] == 36


def test_resume_keeps_the_fitted_length_and_is_exact(tmp_path, tiny_bert_dir, fake_clock, monkeypatch):
    common = ("optim.epochs=50", "optim.max_minutes=0.2", "save_every=30", "keep_checkpoints=100")
    train(cfg_for(tmp_path, tiny_bert_dir, "full", *common))
    full = json.loads((tmp_path / "full" / "train_summary.json").read_text())
    ckpt = tmp_path / "full" / "checkpoint-30"
    assert json.loads((ckpt / "trainer_state.json").read_text())["total_steps"] == full["fitted_steps"]
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    fake_clock.tick = 1.0  # the resumed run is 'slower': it must not re-fit, nor hit the budget first
    train(cfg_for(tmp_path, tiny_bert_dir, "resumed", *common, f"resume={ckpt}", "optim.max_minutes=600"))
    resumed = json.loads((tmp_path / "resumed" / "train_summary.json").read_text())
    assert resumed["global_step"] == full["global_step"]
    a, b = weights(tmp_path / "full" / "model"), weights(tmp_path / "resumed" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
