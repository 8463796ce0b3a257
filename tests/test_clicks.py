"""Click logs, click models (PBM-EM, cascade), the simulator and click-derived labels."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch

from rerankforge.clicks import (
    LabelConfig,
    Propensities,
    SimulationConfig,
    bootstrap_pbm,
    build_observations,
    click_groups,
    fit_cascade,
    fit_pbm,
    load_propensities,
    simulate_clicks,
    true_propensities,
)
from rerankforge.clicks.metrics import click_perplexity
from rerankforge.clicks.pbm import identifiable_share, predict_clicks
from rerankforge.data.clicks import Impression, read_click_log, write_click_log
from rerankforge.data.groups import read_groups, write_groups
from rerankforge.errors import ConfigError, DataFormatError


def _write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def synthetic_run(n_queries=300, k=10, seed=0):
    """A ranking and graded qrels where relevance thins out with rank (like a real first stage)."""
    rng = np.random.default_rng(seed)
    run, qrels = {}, {}
    for q in range(n_queries):
        docs = [f"q{q}d{r}" for r in range(k)]
        run[f"q{q}"] = [(d, float(k - r)) for r, d in enumerate(docs)]
        qrels[f"q{q}"] = {d: int(rng.random() < 0.6 - 0.04 * r) * int(rng.integers(1, 3)) for r, d in enumerate(docs)}
    return run, qrels


# ---------------------------------------------------------------- click-log reader


def test_read_click_log_counts_every_malformation_with_file_and_line(tmp_path):
    path = _write(tmp_path / "log.jsonl", [
        {"query_id": "q1", "shown": ["a", "b", "c"], "clicks": ["b", "b"], "dwell": {"b": 30}},  # ok, repeat merged
        {"query": "heart attack", "shown": ["a", "b"], "clicks": []},  # ok, text only
        {"query_id": "q1", "shown": [], "clicks": []},  # empty_shown
        {"query_id": "q1", "shown": ["a", "b"], "clicks": ["z"]},  # click_not_shown
        {"shown": ["a"], "clicks": []},  # missing_query
        {"query_id": "q1", "shown": ["a", "a"], "clicks": []},  # duplicate_shown
        "{not json",  # invalid_json
        {"query_id": "q1", "shown": ["a"], "clicks": ["a"], "dwell": {"a": -1}},  # bad_dwell
        {"query_id": "q1", "shown": "a b", "clicks": []},  # bad_field
    ])
    log = read_click_log(path)
    assert len(log) == 2
    s = log.stats
    assert s.lines == 9
    assert dict(s.skipped) == {"empty_shown": 1, "click_not_shown": 1, "missing_query": 1, "duplicate_shown": 1,
                               "invalid_json": 1, "bad_dwell": 1, "bad_field": 1}
    assert s.repeated_clicks == 1
    assert log.impressions[0].clicks == ["b"] and log.impressions[0].dwell == {"b": 30.0}
    assert log.impressions[1].query_id == "heart attack" and log.impressions[1].query == "heart attack"
    assert s.examples["click_not_shown"][0].startswith(f"{path}:4: ")
    summary = s.summary()
    assert "click_not_shown 1" in summary and f"{path}:4" in summary

    with pytest.raises(DataFormatError, match=r"log\.jsonl:3: .*empty"):
        read_click_log(path, strict=True)


def test_read_click_log_checks_ids_against_collection_and_can_drop_unshown_clicks(tmp_path):
    path = _write(tmp_path / "log.jsonl", [
        {"query_id": "q1", "shown": ["a", "b"], "clicks": ["b", "x"]},
        {"query_id": "q9", "shown": ["a"], "clicks": []},
        {"query_id": "q1", "shown": ["a", "nope"], "clicks": []},
        {"query": "text of q2", "shown": ["a"], "clicks": ["a"]},
    ])
    queries = {"q1": "text of q1", "q2": "text of q2"}
    corpus = {"a", "b"}
    log = read_click_log(path, queries=queries, corpus=corpus, unshown_clicks="drop")
    assert [i.query_id for i in log.impressions] == ["q1", "q2"]  # text mapped back to the collection's id
    assert log.impressions[0].clicks == ["b"] and log.impressions[0].query == "text of q1"
    assert log.stats.dropped_clicks == 1
    assert dict(log.stats.skipped) == {"unknown_query": 1, "unknown_doc": 1}


def test_click_log_round_trip_gzip_and_dwell_threshold(tmp_path):
    imps = [Impression("q1", ["a", "b", "c"], ["a", "c"], dwell={"a": 2.0, "c": 50.0}, session="s1"),
            Impression("q2", ["d"], [], query="text")]
    path = tmp_path / "log.jsonl.gz"
    assert write_click_log(path, imps) == 2
    with gzip.open(path, "rt") as fh:
        assert json.loads(fh.readline())["session"] == "s1"
    back = read_click_log(path).impressions
    assert back[0].clicked() == {"a", "c"}
    assert back[0].clicked(min_dwell=10) == {"c"}
    assert back[1].query == "text"


def test_yandex_sample_reads_in_its_real_format_and_pbm_falls_with_rank(shared_datasets):
    path = shared_datasets / "yandex-wscd-click-sample" / "train.jsonl.gz"
    log = read_click_log(path)
    # SOURCE.md: 35,064 impressions, 10 results each; some clicks hit documents that were not shown.
    assert log.stats.lines == 35_064
    assert set(log.stats.skipped) == {"click_not_shown"}
    assert log.stats.impressions + log.stats.skipped_total == 35_064
    assert all(len(i.shown) == 10 for i in log.impressions)
    kept = read_click_log(path, unshown_clicks="drop")
    assert len(kept) == 35_064 and kept.stats.dropped_clicks > 0

    obs = build_observations(log.impressions)
    assert identifiable_share(obs.aggregate()[0]) > 0.5  # the lists vary across impressions
    prop = fit_pbm(obs).propensity
    assert prop[0] == 1.0
    assert prop[1] > prop[4] > prop[9] > 0.05
    assert np.all(np.diff(prop[:6]) < 0)  # clearly decreasing at the top


# ---------------------------------------------------------------- simulator


def test_simulator_is_reproducible_and_follows_pbm():
    run, qrels = synthetic_run(50)
    cfg = SimulationConfig(impressions=2000, perturb="shuffle", perturb_prob=0.5, seed=7)
    a = simulate_clicks(run, qrels, cfg)
    b = simulate_clicks(run, qrels, cfg)
    c = simulate_clicks(run, qrels, SimulationConfig(impressions=2000, perturb="shuffle", perturb_prob=0.5, seed=8))
    assert [(i.query_id, i.shown, i.clicks) for i in a] == [(i.query_id, i.shown, i.clicks) for i in b]
    assert [(i.query_id, i.shown, i.clicks) for i in a] != [(i.query_id, i.shown, i.clicks) for i in c]
    for imp in a:
        assert sorted(imp.shown) == sorted(d for d, _ in run[imp.query_id])
        assert set(imp.clicks) <= set(imp.shown)
    unchanged = sum(i.shown == [d for d, _ in run[i.query_id]] for i in a)
    assert 0.4 * len(a) < unchanged < 0.65 * len(a)  # half the impressions shuffled (a shuffle can be the identity)

    # Click-through per rank on never-perturbed impressions of all-relevant lists: exactly theta_r.
    run1 = {"q": [(f"d{r}", 1.0) for r in range(10)]}
    qrels1 = {"q": {f"d{r}": 1 for r in range(10)}}
    sim = simulate_clicks(run1, qrels1, SimulationConfig(impressions=20_000, eta=1.5, perturb="none", seed=1))
    ctr = np.array([sum(f"d{r}" in i.clicks for i in sim) for r in range(10)]) / len(sim)
    np.testing.assert_allclose(ctr, true_propensities(10, 1.5), atol=0.012)


def test_simulator_click_noise_and_graded_relevance():
    run = {"q": [("rel2", 3.0), ("rel1", 2.0), ("non", 1.0)]}
    qrels = {"q": {"rel2": 2, "rel1": 1}}
    cfg = SimulationConfig(impressions=30_000, eta=0.0, eps_neg=0.1, perturb="none", seed=3)
    sim = simulate_clicks(run, qrels, cfg)
    rate = {d: sum(d in i.clicks for i in sim) / len(sim) for d in ("rel2", "rel1", "non")}
    # eps_neg + (1 - eps_neg) (2^rel - 1) / (2^2 - 1)
    assert rate["rel2"] == pytest.approx(1.0, abs=1e-9)
    assert rate["rel1"] == pytest.approx(0.1 + 0.9 / 3, abs=0.01)
    assert rate["non"] == pytest.approx(0.1, abs=0.01)
    binary = simulate_clicks(run, qrels, SimulationConfig(impressions=5000, eta=0.0, eps_pos=0.8, relevance="binary",
                                                          perturb="none", seed=3))
    assert sum("rel1" in i.clicks for i in binary) / 5000 == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ConfigError, match="eps_neg"):
        simulate_clicks(run, qrels, SimulationConfig(eps_neg=0.5, eps_pos=0.2))


def test_swap_intervention_moves_only_rank_one():
    run, qrels = synthetic_run(5)
    sim = simulate_clicks(run, qrels, SimulationConfig(impressions=500, perturb="swap", perturb_prob=1.0, seed=2))
    for imp in sim:
        base = [d for d, _ in run[imp.query_id]]
        diff = [r for r, (x, y) in enumerate(zip(imp.shown, base)) if x != y]
        assert len(diff) == 2 and diff[0] == 0


# ---------------------------------------------------------------- PBM by EM


def test_em_recovers_simulated_propensities_within_10_percent():
    run, qrels = synthetic_run(300)
    imps = simulate_clicks(run, qrels, SimulationConfig(impressions=30_000, eta=1.0, perturb="shuffle",
                                                        perturb_prob=0.3, seed=11))
    obs = build_observations(imps)
    res = fit_pbm(obs)
    true = np.array(true_propensities(10, 1.0))
    assert res.converged
    assert np.max(np.abs(res.propensity / true - 1)) < 0.10

    boot = bootstrap_pbm(obs, res, samples=8, unit="query", seed=0)
    assert boot.samples.shape == (8, 10)
    assert np.all(boot.low <= boot.high)
    assert boot.low[0] == boot.high[0] == 1.0
    # the interval is about the estimate, and not degenerate
    assert np.all(boot.low[1:] < res.propensity[1:] + 0.02) and np.all(boot.high[1:] > res.propensity[1:] - 0.02)
    assert np.all(boot.high[1:] - boot.low[1:] > 0)
    imp_boot = bootstrap_pbm(obs, res, samples=3, unit="impression", seed=0)
    assert imp_boot.samples.shape == (3, 10)


def test_em_refuses_a_log_where_ranks_never_change():
    run, qrels = synthetic_run(30)
    imps = simulate_clicks(run, qrels, SimulationConfig(impressions=600, perturb="none", seed=1))
    with pytest.raises(ConfigError, match="not identifiable"):
        fit_pbm(build_observations(imps))


def test_no_position_bias_gives_a_flat_curve_and_pair_model_runs():
    run, qrels = synthetic_run(100)
    imps = simulate_clicks(run, qrels, SimulationConfig(impressions=10_000, eta=0.0, perturb="shuffle",
                                                        perturb_prob=1.0, seed=5))
    obs = build_observations(imps)
    for relevance in ("mixture", "pair"):
        prop = fit_pbm(obs, relevance).propensity
        assert np.all(np.abs(prop - 1.0) < 0.12), (relevance, prop)


def test_cascade_recovers_attractiveness_and_perplexity_prefers_the_true_model():
    rng = np.random.default_rng(0)
    alpha = {f"d{r}": a for r, a in enumerate([0.6, 0.3, 0.2, 0.1, 0.05])}
    imps = []
    for _ in range(20_000):
        shown = list(alpha)
        if rng.random() < 0.5:
            rng.shuffle(shown)
        clicks = []
        for d in shown:  # cascade: click the first attractive document, then stop
            if rng.random() < alpha[d]:
                clicks = [d]
                break
        imps.append(Impression("q", shown, clicks))
    cm = fit_cascade(imps)
    for d, a in alpha.items():
        assert cm.alpha("q", d) == pytest.approx(a, abs=0.02)
    assert cm.examination[0] == 1.0 and np.all(np.diff(cm.examination) < 0)
    train, test = imps[:15_000], imps[15_000:]
    obs = build_observations(train)
    pbm = fit_pbm(obs)
    cm = fit_cascade(train)
    ppl_cm = click_perplexity(test, lambda q, s: [cm.click_probs(a, b) for a, b in zip(q, s)])
    ppl_pbm = click_perplexity(test, lambda q, s: predict_clicks(pbm, obs, q, s))
    assert 1.0 < ppl_cm["perplexity"] < ppl_pbm["perplexity"] < 2.0


def test_propensity_file_round_trip_and_errors(tmp_path):
    p = Propensities([1.0, 0.5, 0.25], [1.0, 0.4, 0.2], [1.0, 0.6, 0.3], 0.95, {"model": "pbm"})
    p.save(tmp_path / "p.json")
    back = load_propensities(tmp_path / "p.json")
    assert back.values == [1.0, 0.5, 0.25] and back.ci_high == [1.0, 0.6, 0.3] and back.meta["model"] == "pbm"
    assert back.at(2) == 0.5
    with pytest.raises(ConfigError, match="ranks 1-3"):
        back.at(4)
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "rerankforge.propensities/1", "propensity": [1, 0]}))
    with pytest.raises(DataFormatError, match="rank 2"):
        load_propensities(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(DataFormatError, match="schema"):
        load_propensities(tmp_path / "other.json")


# ---------------------------------------------------------------- labels and groups


def _labels_fixture():
    props = Propensities([1.0, 0.5, 0.25, 0.1])
    imps = [
        Impression("q1", ["a", "b", "c", "d"], ["a", "c"]),
        Impression("q1", ["b", "a", "c", "d"], ["d"], dwell={"d": 3.0}),
        Impression("q1", ["a", "b", "c", "d"], []),
        Impression("q2", ["x", "y"], []),  # never clicked
    ]
    return props, imps


def test_naive_and_ipw_labels_by_hand():
    props, imps = _labels_fixture()
    queries = {"q1": "query one", "q2": "query two"}
    naive, _ = click_groups(imps, LabelConfig(method="naive", with_text=False), props, queries)
    ipw, stats = click_groups(imps, LabelConfig(method="ipw", with_text=False, max_weight=5.0), props, queries)
    assert [g.query_id for g in ipw] == ["q1"] and stats.dropped["no_clicks"] == 1
    n = {c.doc_id: c for c in naive[0].candidates}
    w = {c.doc_id: c for c in ipw[0].candidates}
    assert n["a"].label == 1 and n["a"].weight == pytest.approx(1 / 3)
    assert n["b"].label == 0 and n["b"].weight == 1.0
    assert w["a"].weight == pytest.approx(1 / 3)                # clicked at rank 1 (propensity 1)
    assert w["c"].weight == pytest.approx((1 / 0.25) / 3)       # clicked at rank 3
    assert w["d"].weight == pytest.approx(5.0 / 3)              # 1/0.1 = 10, clipped at 5
    assert stats.clipped_clicks == 1
    # propensity: harmonic mean over the ranks shown; a was at ranks 1, 2, 1
    assert w["a"].propensity == pytest.approx(3 / (1 + 2 + 1))
    assert w["a"].rank == 1 and w["b"].rank == 2
    # dwell threshold turns the 3-second click on d into no click
    dw, _ = click_groups(imps, LabelConfig(method="ipw", with_text=False, min_dwell=10), props, queries)
    assert {c.doc_id: c.label for c in dw[0].candidates}["d"] == 0.0
    # rate mode: soft labels, weight 1
    rate, rstats = click_groups(imps, LabelConfig(method="ipw", label_mode="rate", with_text=False), props, queries)
    r = {c.doc_id: c for c in rate[0].candidates}
    assert r["a"].label == pytest.approx(1 / 3) and r["a"].weight == 1.0
    assert r["c"].label == 1.0 and r["d"].label == 1.0 and rstats.clipped_labels == 2  # 4/3 and 10/3 capped at 1
    kept, _ = click_groups(imps, LabelConfig(method="naive", with_text=False, keep_unclicked=True), None, queries)
    assert [g.query_id for g in kept] == ["q1", "q2"]


def test_ipw_click_rate_is_unbiased_and_naive_is_not():
    """Under PBM, the IPW rate of each document estimates P(click | examined); naive does not."""
    gamma = {f"d{r}": g for r, g in enumerate([0.2, 0.9, 0.5, 0.9, 0.1, 0.7])}
    theta = true_propensities(6, 1.0)
    rng = np.random.default_rng(0)
    imps = []
    for _ in range(40_000):
        shown = list(gamma)
        if rng.random() < 0.3:
            rng.shuffle(shown)
        imps.append(Impression("q", shown, [d for r, d in enumerate(shown)
                                            if rng.random() < theta[r] and rng.random() < gamma[d]]))
    props = Propensities(theta)
    ipw, _ = click_groups(imps, LabelConfig(method="ipw", with_text=False), props, {"q": "q"})
    naive, _ = click_groups(imps, LabelConfig(method="naive", with_text=False), props, {"q": "q"})
    est = {c.doc_id: c.weight for c in ipw[0].candidates}
    for d, g in gamma.items():
        assert est[d] == pytest.approx(g, rel=0.06)
    biased = {c.doc_id: c.weight for c in naive[0].candidates}
    assert biased["d3"] < 0.5 * gamma["d3"]  # relevant but usually at rank 4


def test_skip_above_pairs():
    props, imps = _labels_fixture()
    groups, _ = click_groups(imps, LabelConfig(method="ipw", structure="skip_above", with_text=False), props,
                             {"q1": "query one"})
    by_pos = {next(c.doc_id for c in g.candidates if c.label == 1): g for g in groups}
    # impression 1: c clicked at 3, b skipped above it (a was clicked); impression 2: d clicked at 4 over b, a, c
    assert set(by_pos) == {"c", "d"}
    assert {c.doc_id for c in by_pos["c"].candidates if c.label == 0} == {"b"}
    assert {c.doc_id for c in by_pos["d"].candidates if c.label == 0} == {"a", "b", "c"}
    pos_c = next(c for c in by_pos["c"].candidates if c.label == 1)
    assert pos_c.weight == pytest.approx(4.0)  # 1 / propensity(3)
    naive, _ = click_groups(imps, LabelConfig(method="naive", structure="skip_above", with_text=False), None,
                            {"q1": "query one"})
    assert all(c.weight == 1.0 for g in naive for c in g.candidates)


def test_groups_carry_texts_round_trip_and_weights_reach_the_listwise_loss(tmp_path):
    from rerankforge.data.dataset import GroupCollator, GroupDataset
    from rerankforge.losses import build_loss

    props, imps = _labels_fixture()
    texts = {d: f"text of {d}" for d in "abcdxy"}

    class Corp(dict):
        def text(self, d):
            return self[d]

    groups, _ = click_groups(imps, LabelConfig(method="ipw"), props, {"q1": "query one"}, Corp(texts))
    write_groups(tmp_path / "g.jsonl", groups)
    back = read_groups(tmp_path / "g.jsonl")
    assert back[0].candidates[0].text == "text of a"
    assert back[0].meta["method"] == "ipw"

    def tokenize(queries, docs):
        return {}

    batch = GroupCollator(tokenize)([GroupDataset(back)[0]])
    # listwise_ce target ∝ exp_gain(label) * weight = weight for the clicked documents
    loss = build_loss("listwise_ce")
    scores = torch.zeros_like(batch.weights, requires_grad=True)
    value, _ = loss.forward_batch(scores, batch)
    value.backward()
    w = batch.weights * (batch.labels > 0)
    target = w / w.sum()
    np.testing.assert_allclose((-scores.grad).numpy() + torch.softmax(torch.zeros_like(w), -1).numpy(),
                               target.numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="propensities"):
        click_groups(imps, LabelConfig(method="ipw"), None, {"q1": "q"})
    with pytest.raises(ConfigError, match="no text"):
        click_groups(imps, LabelConfig(method="naive", with_text=False), None, {})
    with pytest.raises(ConfigError, match="ranks 1-2"):
        click_groups(imps, LabelConfig(method="ipw", with_text=False), Propensities([1.0, 0.5]), {"q1": "q"})
    assert math.isfinite(float(value.detach()))
