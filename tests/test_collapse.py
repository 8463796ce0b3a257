"""The collapse guard: a run driven to constant scores is flagged (and stopped on request), a
normal run is not, and evaluation flags a model whose scores are nearly constant."""

import json
import math
import warnings

import pytest
import torch

from helpers import write_tiny_groups
from rerankforge.config import load_config
from rerankforge.losses import build_loss
from rerankforge.train import TrainConfig, train
from rerankforge.train.collapse import CollapseConfig, CollapseMonitor, CollapseWarning, score_spread


def run_cfg(tmp_path, model_dir, name, lr, *overrides):
    groups = write_tiny_groups(tmp_path / "groups.jsonl", n=12, size=5)
    return load_config(TrainConfig, None, [f"output_dir={tmp_path / name}", f"model.name_or_path={model_dir}",
                                           "model.max_length=48", f"data.train_groups={groups}", "data.group_size=4",
                                           "optim.batch_size=2", f"optim.lr={lr}", "bf16=false", "progress=false",
                                           "log_every=2", "optim.epochs=4", *overrides])


def summary(tmp_path, name):
    return json.loads((tmp_path / name / "train_summary.json").read_text())


def test_huge_learning_rate_collapses_is_flagged_and_evaluation_flags_the_model(tmp_path, tiny_ce_dir,
                                                                                 tiny_collection):
    from rerankforge import api

    with pytest.warns(CollapseWarning, match="training collapsed at step"):
        model_dir = train(run_cfg(tmp_path, tiny_ce_dir, "hot", 10.0))
    s = summary(tmp_path, "hot")
    c = s["collapse"]
    assert c["collapsed"] and c["stopped"] is None and c["step"] <= 12
    assert c["last_score_spread"] < 1e-3
    assert c["last_uniform_loss"] == pytest.approx(math.log(4))  # listwise CE, 1 positive in 4: ln G
    assert s["global_step"] == 24  # without stop_on_collapse the run goes on
    assert all("score_spread" in h and "uniform_loss" in h for h in s["history"])

    coll, run = tiny_collection
    with pytest.warns(CollapseWarning, match="nearly constant"):
        report = api.evaluate(model_dir, coll, "test", run=run, bf16=False)
    assert report["score_spread"]["nearly_constant"]


def test_stop_on_collapse_ends_the_run_and_keeps_the_model(tmp_path, tiny_ce_dir):
    with pytest.warns(CollapseWarning, match="stopping"):
        model_dir = train(run_cfg(tmp_path, tiny_ce_dir, "stop", 10.0, "stop_on_collapse=true"))
    c = summary(tmp_path, "stop")["collapse"]
    assert c["collapsed"] and c["stopped"] == c["step"]
    assert summary(tmp_path, "stop")["global_step"] == c["step"] < 24
    assert (model_dir / "rerankforge.json").exists()


def test_a_normal_run_is_not_flagged(tmp_path, tiny_ce_dir, tiny_collection):
    from rerankforge import api

    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        model_dir = train(run_cfg(tmp_path, tiny_ce_dir, "ok", 1e-3, "stop_on_collapse=true"))
        coll, run = tiny_collection
        report = api.evaluate(model_dir, coll, "test", run=run, bf16=False)
    s = summary(tmp_path, "ok")
    assert not s["collapse"]["collapsed"] and s["collapse"]["collapsed_windows"] == 0 and s["global_step"] == 24
    assert not report["score_spread"]["nearly_constant"]


def _batch(scores_shape, labels):
    class B:
        pass

    b = B()
    b.labels = torch.tensor(labels, dtype=torch.float32)
    b.mask = torch.ones(scores_shape, dtype=torch.bool)
    b.weights = None
    b.field = lambda name: getattr(b, name)
    return b


@pytest.mark.parametrize("loss,uniform", [("listwise_ce", math.log(8)), ("bce", math.log(2))])
def test_uniform_loss_values(loss, uniform):
    """The reference the loss is compared with: ln G for listwise CE, ln 2 for BCE at score 0."""
    labels = [[1.0] + [0.0] * 7] * 2
    mon = CollapseMonitor(CollapseConfig(windows=1), build_loss(loss))
    zeros = torch.zeros(2, 8)
    mon.observe(zeros, _batch((2, 8), labels), uniform)
    with pytest.warns(CollapseWarning):
        rec = mon.window(1)
    assert rec["uniform_loss"] == pytest.approx(uniform) and rec["score_spread"] == 0.0
    # spread but no ranking: the loss stays at the uniform value, so it is not a collapse
    mon2 = CollapseMonitor(CollapseConfig(windows=1), build_loss(loss))
    mon2.observe(torch.randn(2, 8), _batch((2, 8), labels), 0.1)
    assert mon2.window(1)["score_spread"] > 0.1 and mon2.collapsed_at is None


def test_non_finite_loss_counts_as_diverged():
    mon = CollapseMonitor(CollapseConfig(windows=2), build_loss("listwise_ce"), stop=True)
    labels = [[1.0, 0.0, 0.0]]
    for step in (1, 2):
        mon.observe(torch.full((1, 3), float("nan")), _batch((1, 3), labels), float("nan"))
        if step == 1:
            mon.window(step)
        else:
            with pytest.warns(CollapseWarning, match="diverged"):
                mon.window(step)
    assert mon.should_stop and mon.summary()["diverged"] and mon.summary()["step"] == 2


def test_score_spread_on_runs():
    flat = {f"q{i}": [(f"d{j}", 3.0 + 1e-6 * j) for j in range(10)] for i in range(4)}
    ranked = {f"q{i}": [(f"d{j}", float(j)) for j in range(10)] for i in range(4)}
    with pytest.warns(CollapseWarning):
        assert score_spread(flat)["nearly_constant"]
    out = score_spread(ranked)
    assert not out["nearly_constant"] and out["constant_queries"] == 0 and out["queries"] == 4
