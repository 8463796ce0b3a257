"""Learned-bias click losses (two_tower, dla, trust_bias): they recover a known position-bias curve
from synthetic PBM counts, gradients reach both towers, and the trainer optimises, checkpoints and
reports their parameters."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rerankforge.losses import LOSSES, build_loss

Q, G, K = 48, 10, 10


def pbm_counts(theta, gamma, shuffle=0.3, n=200.0):
    """Expected per-rank views / clicks: each query shows its G documents in a fixed logging order,
    a share ``shuffle`` of impressions in uniformly random order."""
    views = torch.full((Q, G, K), n * shuffle / K)
    for g in range(G):
        views[:, g, g] += n * (1 - shuffle)
    clicks = views * theta[None, None, :] * gamma[:, :, None]
    return views, clicks


def fit(loss, views, clicks, steps=500, lr=0.1):
    """Free per-document scores and the loss's parameters, full batch Adam. One thread: these tensors
    are tiny, and two threads on a shared 2-core machine run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = torch.nn.Parameter(torch.zeros(views.shape[:2]))
        opt = torch.optim.Adam([scores, *loss.parameters()], lr=lr)
        batch = SimpleNamespace(views=views, clicks=clicks, mask=torch.ones(views.shape[:2], dtype=torch.bool))
        for _ in range(steps):
            opt.zero_grad()
            value = loss.forward_batch(scores, batch)
            value.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return scores.detach()


@pytest.fixture(scope="module")
def truth():
    gen = torch.Generator().manual_seed(0)
    theta = torch.tensor([1.0 / r for r in range(1, K + 1)])
    gamma = 0.05 + 0.9 * torch.rand(Q, G, generator=gen)
    return theta, gamma


@pytest.mark.parametrize("bias_fit", ["joint", "profile"])
def test_two_tower_pbm_recovers_the_examination_curve(truth, bias_fit):
    theta, gamma = truth
    loss = LOSSES.build("two_tower", form="pbm", num_ranks=K, bias_fit=bias_fit)
    scores = fit(loss, *pbm_counts(theta, gamma))
    est = torch.tensor(loss.propensity())
    assert len(est) == K
    assert torch.allclose(est, theta, rtol=0.05), (est, theta)
    # the relevance tower orders documents by the true click probability
    corr = torch.corrcoef(torch.stack([scores.flatten(), gamma.flatten()]))[0, 1]
    assert corr > 0.95
    assert loss.describe()["form"] == "pbm"


@pytest.mark.parametrize("bias_fit", ["joint", "profile"])
def test_two_tower_additive_recovers_the_bias_logits(bias_fit):
    gen = torch.Generator().manual_seed(1)
    bias = torch.tensor([0.0, -0.4, -0.8, -1.1, -1.3, -1.6, -1.8, -2.0, -2.1, -2.3])
    rel = torch.randn(Q, G, generator=gen)
    views = torch.full((Q, G, K), 20.0)
    clicks = views * torch.sigmoid(rel[:, :, None] + bias)
    loss = LOSSES.build("two_tower", form="additive", num_ranks=K, bias_fit=bias_fit)
    fit(loss, views, clicks)
    odds = torch.tensor(loss.propensity())
    assert torch.allclose(odds.log(), bias - bias[0], atol=0.05), odds.log()


def test_profile_bias_fit_is_not_confounded_by_a_weak_relevance_tower(truth):
    """The logger ranks relevant documents first and the relevance tower sees relevance only
    through a noisy feature (one learned weight): jointly trained, the bias tower absorbs the
    relevance the tower misses and the curve comes out far too steep; the profile fit learns it
    only from each document's click rate across ranks (the 30% shuffled impressions)."""
    theta, gamma = truth
    gamma = gamma.sort(1, descending=True).values
    views, clicks = pbm_counts(theta, gamma)
    feature = torch.logit(gamma) + 1.5 * torch.randn(Q, G, generator=torch.Generator().manual_seed(3))
    errors = {}
    for bias_fit in ("joint", "profile"):
        loss = LOSSES.build("two_tower", form="pbm", num_ranks=K, bias_fit=bias_fit)
        weight = torch.nn.Parameter(torch.ones(()))
        opt = torch.optim.Adam([weight, *loss.parameters()], lr=0.1)
        batch = SimpleNamespace(views=views, clicks=clicks, mask=torch.ones(Q, G, dtype=torch.bool))
        for _ in range(400):
            opt.zero_grad()
            loss.forward_batch(weight * feature, batch).backward()
            opt.step()
        est = torch.tensor(loss.propensity())
        errors[bias_fit] = float(((est - theta).abs() / theta).max())
        assert weight.detach() > 0  # the relevance tower still learns to rank by its feature
    assert errors["joint"] > 0.3, errors  # the failure this option exists for
    assert errors["profile"] < 0.02, errors


def test_listwise_two_tower_recovers_the_curve_and_ranks_by_relevance(truth):
    """relevance='listwise': the bias tower still recovers the curve (profile likelihood) and the
    relevance tower, a listwise softmax on curve-corrected click rates, orders each query's
    documents by their true relevance although the logger shows them in a fixed order."""
    theta, gamma = truth
    loss = LOSSES.build("two_tower", form="pbm", num_ranks=K, bias_fit="profile", relevance="listwise")
    scores = fit(loss, *pbm_counts(theta, gamma))
    assert torch.allclose(torch.tensor(loss.propensity()), theta, rtol=0.05)
    # softmax scores are log relevance up to a per-query constant
    centred = scores - scores.mean(1, keepdim=True)
    log_g = gamma.log() - gamma.log().mean(1, keepdim=True)
    assert torch.corrcoef(torch.stack([centred.flatten(), log_g.flatten()]))[0, 1] > 0.95
    assert loss.describe()["relevance"] == "listwise"


def test_listwise_two_tower_equals_ipw_listwise_ce_with_its_curve():
    """With the curve held at theta, the listwise relevance term is the IPW objective: listwise CE on
    click rates sum_r C_r min(1/theta_r, W) / sum_r V_r, computed here by hand."""
    gen = torch.Generator().manual_seed(5)
    views = torch.randint(0, 6, (3, 5, 4), generator=gen).float()
    clicks = torch.minimum(views, torch.randint(0, 3, (3, 5, 4), generator=gen).float())
    clicks[2] = 0.0  # a query without clicks is left out, as the IPW objective leaves it out
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 4] = False
    scores = torch.randn(3, 5, generator=gen)
    theta = torch.tensor([0.8, 0.4, 0.1, 0.004])  # 1/theta at rank 4 is 200: clipped at W = 50
    loss = LOSSES.build("two_tower", num_ranks=4, bias_fit="profile", relevance="listwise", max_weight=50.0)
    with torch.no_grad():
        loss.bias.copy_(torch.logit(theta))
    value = loss.forward_batch(scores, SimpleNamespace(views=views, clicks=clicks, mask=mask))
    rates = torch.zeros(3, 5)
    for q in range(3):
        for d in range(5):
            shown = float(views[q, d].sum())
            if mask[q, d] and shown > 0:
                rates[q, d] = sum(float(clicks[q, d, r]) * min(float(theta[0] / theta[r]), 50.0)
                                  for r in range(4)) / shown
    live = mask & (views.sum(-1) > 0)
    expected = LOSSES.build("listwise_ce")(scores, live.float(), live, weights=rates)
    assert torch.allclose(value, expected, atol=1e-6), (value, expected)
    with pytest.raises(ValueError, match="profile"):
        LOSSES.build("two_tower", relevance="listwise")  # joint fit: nothing would train the curve
    with pytest.raises(ValueError, match="relevance"):
        LOSSES.build("two_tower", relevance="pairwise", bias_fit="profile")


def test_held_out_fit_of_a_listwise_two_tower_is_ipw_style():
    """Its relevance tower has no click calibration, so the held-out click model is theta_r x
    sigmoid(a s + c) with its learned curve, exactly as for DLA with the same curve."""
    import numpy as np

    from rerankforge.pipelines.clicks_sweep import click_model_fit

    rng = np.random.default_rng(0)
    cells = {(f"q{i}", f"d{j}"): (rng.integers(1, 5, 3).astype(float), rng.integers(0, 2, 3).astype(float))
             for i in range(4) for j in range(3)}
    scores = {k: float(rng.normal()) for k in cells}
    curve = [1.0, 0.5, 0.25]
    state = {"two_tower": {"relevance": "listwise", "propensity": curve, "bias_logit": [9.0, 9.0, 9.0],
                           "relevance_scale": 1.0, "relevance_offset": 0.0, "form": "pbm"}}
    got = click_model_fit("two_tower", state, None, cells, cells, scores)
    assert got == click_model_fit("dla", None, curve, cells, cells, scores)
    state["two_tower"]["relevance"] = "likelihood"
    assert click_model_fit("two_tower", state, None, cells, cells, scores) != got


def test_profile_relevance_is_each_cells_maximum_likelihood():
    from rerankforge.losses.two_tower import profile_relevance

    bias = torch.tensor([2.0, 0.0, -1.0])
    theta = torch.sigmoid(bias)
    views = torch.tensor([[[10.0, 30.0, 0.0], [5.0, 5.0, 5.0], [4.0, 0.0, 0.0]]])
    clicks = torch.tensor([[[4.0, 6.0, 0.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0]]])
    cells = views > 0
    gamma = profile_relevance("pbm", bias, views, clicks, cells)[0]
    grid = torch.linspace(1e-4, 1.0, 20001, dtype=torch.float64)
    ll = (clicks[0, 0, :2, None] * torch.log(theta[:2, None] * grid)
          + (views[0, 0, :2, None] - clicks[0, 0, :2, None]) * torch.log1p(-theta[:2, None] * grid)).sum(0)
    assert abs(float(gamma[0]) - float(grid[ll.argmax()])) < 1e-3
    assert gamma[1] == 0.0  # never clicked
    assert gamma[2] == pytest.approx(1.0)  # clicked on every view: at the bound
    rho = profile_relevance("additive", bias, views[:, :1], clicks[:, :1], cells[:, :1])[0, 0]
    deriv = (clicks[0, 0, :2] - views[0, 0, :2] * torch.sigmoid(bias[:2] + rho)).sum()
    assert abs(float(deriv)) < 1e-4


def test_dla_recovers_the_examination_curve(truth):
    theta, gamma = truth
    loss = LOSSES.build("dla", num_ranks=K)
    scores = fit(loss, *pbm_counts(theta, gamma), steps=800)
    est = torch.tensor(loss.propensity())
    assert torch.allclose(est, theta, rtol=0.1), (est, theta)
    # ranker softmax ~ relevance ratios within each query
    corr = torch.corrcoef(torch.stack([(scores - scores.mean(1, keepdim=True)).flatten(),
                                       gamma.log().sub(gamma.log().mean(1, keepdim=True)).flatten()]))[0, 1]
    assert corr > 0.95


def test_trust_bias_fits_and_beats_a_position_blind_model(truth):
    theta, gamma = truth
    views, clicks = pbm_counts(theta, 0.1 + 0.9 * gamma)  # noisy clicks: an affine click model
    loss = LOSSES.build("trust_bias", num_ranks=K)
    fit(loss, views, clicks, steps=300)
    d = loss.describe()
    assert len(d["alpha"]) == K and all(0 <= b <= 1 for b in d["beta"])
    prop = d["propensity"]
    assert prop[0] == 1.0 and prop[1] > prop[4] > prop[9]


@pytest.mark.parametrize("name,kwargs", [("two_tower", {}), ("two_tower", {"bias_fit": "profile"}),
                                         ("two_tower", {"bias_fit": "profile", "form": "additive"}),
                                         ("two_tower", {"bias_fit": "profile", "relevance": "listwise"}),
                                         ("dla", {}), ("trust_bias", {})])
def test_gradients_reach_scores_and_bias_and_ignore_padding(name, kwargs):
    gen = torch.Generator().manual_seed(2)
    views = torch.randint(0, 5, (3, 4, 6), generator=gen).float()
    clicks = torch.minimum(views, torch.randint(0, 3, (3, 4, 6), generator=gen).float())
    clicks[:, 0, 0] = views[:, 0, 0] = 3.0  # every group has a click
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 3] = False
    scores = torch.randn(3, 4, generator=gen)
    scores[0, 3] = float("nan")  # padding may hold garbage
    scores.requires_grad_(True)
    loss = LOSSES.build(name, num_ranks=8, **kwargs)
    value = loss.forward_batch(scores, SimpleNamespace(views=views, clicks=clicks, mask=mask))
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[0, 3] == 0
    assert scores.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())


def test_click_loss_needs_counts():
    from rerankforge.errors import ConfigError

    loss = build_loss([{"name": "two_tower"}])
    batch = SimpleNamespace(views=None, clicks=None, mask=torch.ones(1, 2, dtype=torch.bool),
                            weights=None, field=lambda name: None)
    with pytest.raises(ConfigError, match="views"):
        loss.forward_batch(torch.zeros(1, 2), batch)
    with pytest.raises(Exception, match="num_ranks"):
        LOSSES.build("dla", num_ranks=2).forward_batch(
            torch.zeros(1, 2), SimpleNamespace(views=torch.ones(1, 2, 3), clicks=torch.zeros(1, 2, 3),
                                               mask=torch.ones(1, 2, dtype=torch.bool)))


def test_trainer_optimises_and_reports_loss_parameters(tmp_path, tiny_bert_dir):
    """The bias tower is in the optimizer (at its own lr), saved in checkpoints, reported in the
    summary, and not part of the exported model."""
    from helpers import make_groups
    from rerankforge.data.groups import read_groups, write_groups
    from rerankforge.train import TrainConfig, train
    from rerankforge.config import load_config

    groups = make_groups(n=8, size=5)
    for g in groups:
        for c in g.candidates:
            c.views = [4.0, 4.0, 4.0]
            c.clicks = [2.0 if c.label else 1.0, 1.0 if c.label else 0.0, 0.0]
    path = tmp_path / "groups.jsonl"
    write_groups(path, groups)
    assert read_groups(path)[0].candidates[0].views == [4.0, 4.0, 4.0]
    cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / 'run'}", f"model.name_or_path={tiny_bert_dir}",
                                          "model.max_length=32", f"data.train_groups={path}", "data.group_size=null",
                                          "optim.batch_size=4", "optim.epochs=2", "bf16=false", "progress=false",
                                          "save_every=2", "optim.warmup_ratio=0"])
    cfg.loss = [{"name": "two_tower", "num_ranks": 5, "lr": 0.1}]
    model_dir = train(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    state = summary["loss_state"]["two_tower"]
    assert len(state["propensity"]) == 3 and state["propensity"][0] == 1.0
    assert state["bias_logit"] != [0.0, 0.0, 0.0]
    assert state["propensity"][2] < state["propensity"][0]  # no clicks at rank 3
    ckpts = list((tmp_path / "run").glob("checkpoints/*")) or list((tmp_path / "run").glob("checkpoint*"))
    assert ckpts and any(p.name.startswith("custom_checkpoint") for c in ckpts for p in c.iterdir())
    from safetensors.torch import load_file

    assert not any("bias_logit" in k or k.startswith("relevance.") for k in load_file(str(model_dir / "model.safetensors")))


def test_bias_ema_is_the_bias_corrected_average_of_the_iterates_and_is_saved():
    loss = LOSSES.build("two_tower", num_ranks=4, bias_fit="profile", bias_ema=0.9)
    gen = torch.Generator().manual_seed(4)
    views = torch.randint(1, 6, (2, 3, 4), generator=gen).float()
    clicks = torch.minimum(views, torch.randint(0, 3, (2, 3, 4), generator=gen).float())
    batch = SimpleNamespace(views=views, clicks=clicks, mask=torch.ones(2, 3, dtype=torch.bool))
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    iterates = []
    for _ in range(5):
        iterates.append(loss.bias.detach().clone())
        opt.zero_grad()
        loss.forward_batch(torch.zeros(2, 3, requires_grad=True), batch).backward()
        opt.step()
    weights = torch.tensor([0.1 * 0.9 ** (4 - i) for i in range(5)])
    expected = (weights[:, None] * torch.stack(iterates)).sum(0) / weights.sum()
    assert torch.allclose(loss.curve_logits(), expected, atol=1e-6)
    assert not torch.allclose(loss.curve_logits(), loss.bias.detach())
    with torch.no_grad():  # evaluation forwards leave the average alone
        loss.forward_batch(torch.zeros(2, 3), batch)
    assert torch.allclose(loss.curve_logits(), expected, atol=1e-6)
    again = LOSSES.build("two_tower", num_ranks=4, bias_fit="profile", bias_ema=0.9)
    again.load_state_dict(loss.state_dict())
    assert torch.allclose(again.curve_logits(), expected, atol=1e-6)
    assert loss.describe()["bias_logit"] == pytest.approx(expected.tolist(), abs=1e-6)


def test_bias_ema_steadies_a_curve_learned_from_small_batches(truth):
    """Two queries per step, as the click recipes train: the last iterate of the bias tower
    wanders around the curve; its moving average lands closer."""
    theta, gamma = truth
    views = torch.poisson(pbm_counts(theta, gamma)[0], torch.Generator().manual_seed(5))
    clicks = torch.binomial(views, (theta[None, None, :] * gamma[:, :, None]).expand_as(views),
                            generator=torch.Generator().manual_seed(6))
    errors = {}
    for ema in (0.0, 0.98):
        torch.manual_seed(0)
        loss = LOSSES.build("two_tower", num_ranks=K, bias_fit="profile", bias_ema=ema)
        scores = torch.nn.Parameter(torch.zeros(Q, G))
        opt = torch.optim.Adam([scores, *loss.parameters()], lr=0.1)
        order = torch.randperm(Q * 20, generator=torch.Generator().manual_seed(7)) % Q
        for i in range(0, len(order), 2):
            rows = order[i:i + 2]
            batch = SimpleNamespace(views=views[rows], clicks=clicks[rows],
                                    mask=torch.ones(len(rows), G, dtype=torch.bool))
            opt.zero_grad()
            loss.forward_batch(scores[rows], batch).backward()
            opt.step()
        est = torch.tensor(loss.propensity())
        errors[ema] = float(((est - theta).abs() / theta).max())
    assert errors[0.98] < 0.75 * errors[0.0], errors
