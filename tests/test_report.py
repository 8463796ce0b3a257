"""Significance tests on known cases, wins/losses, the cutoff sweep and the report CLI."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from rerankforge.cli import main
from rerankforge.data.beir import Collection
from rerankforge.data.trec import read_run, truncate
from rerankforge.eval import evaluate
from rerankforge.rerank import rerank
from rerankforge.eval.cutoff import cutoff_sweep, rerank_at, write_report
from rerankforge.eval.significance import compare, paired_t_test, randomization_test, wins_losses
from rerankforge.models.base import load_reranker


def test_exact_randomization_test_known_cases():
    # every difference +0.1: only the all-plus and all-minus sign patterns reach |mean| = 0.1
    assert randomization_test([0.0] * 5, [0.1] * 5) == pytest.approx(2 / 32)
    assert randomization_test([0.3, 0.5], [0.3, 0.5]) == 1.0
    # d = (1, 1, 1, -0.5), |sum| = 2.5: reached only when the three 1s share a sign (±3 ± 0.5): 4 of 16
    assert randomization_test(np.zeros(4), [1.0, 1.0, 1.0, -0.5]) == pytest.approx(4 / 16)


def test_monte_carlo_randomization_test():
    rng = np.random.default_rng(0)
    a = rng.random(60)
    # never 0: scipy's two-sided p doubles the smaller one-sided (hits + 1) / (R + 1)
    assert randomization_test(a, a + 0.2, n_resamples=2000) == pytest.approx(2 / 2001)
    noise = rng.normal(0, 0.1, 60)
    p = randomization_test(a, a + noise - noise.mean(), n_resamples=2000)  # mean difference exactly 0
    assert p == pytest.approx(1.0, abs=1e-3)


def test_paired_t_test_matches_the_formula():
    a = np.array([0.2, 0.4, 0.1, 0.7, 0.5])
    b = np.array([0.3, 0.6, 0.4, 0.6, 0.9])
    d = b - a
    t_hand = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), d.size - 1))
    assert paired_t_test(a, a) == (0.0, 1.0)


def test_compare_and_wins_losses():
    base = {"q1": 0.5, "q2": 0.2, "q3": 0.9, "q4": 0.0}
    new = {"q1": 0.8, "q2": 0.2, "q3": 0.4, "q4": 0.1}
    c = compare(base, new)
    assert (c["wins"], c["losses"], c["ties"]) == (2, 1, 1)
    assert c["delta"] == pytest.approx((0.3 + 0 - 0.5 + 0.1) / 4)
    assert c["randomization_resamples"] == 16
    wl = wins_losses(base, new, top=1, texts={"q1": "first query"})
    assert [r["query_id"] for r in wl["biggest_wins"]] == ["q1"] and wl["biggest_wins"][0]["query"] == "first query"
    assert wl["biggest_losses"][0]["query_id"] == "q3" and wl["biggest_losses"][0]["delta"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="different queries"):
        compare(base, {"q1": 1.0})


def test_rerank_at_sorts_only_the_top_k():
    first = {"q": [("a", 5.0), ("b", 4.0), ("c", 3.0)]}
    scores = {"q": {"a": 0.1, "b": 0.9, "c": 2.0}}
    assert rerank_at(first, scores, 2) == {"q": [("b", 0.9), ("a", 0.1)]}
    assert [d for d, _ in rerank_at(first, scores, 3)["q"]] == ["c", "b", "a"]


def test_sweep_equals_reranking_each_cutoff(tiny_ce_dir, tiny_collection):
    """Scoring once at max K must give exactly what reranking only the top-K gives."""
    root, run_path = tiny_collection
    coll = Collection(root)
    model = load_reranker(tiny_ce_dir)
    first = read_run(run_path, coll.queries, coll.corpus)
    rep = cutoff_sweep(model, coll, "test", first, cutoffs=[1, 3, 6], measures=["nDCG@10", "RR@10"],
                       timing_queries=2, bf16=False, n_resamples=200, progress=False)
    qrels = coll.qrels("test")
    judged = {q: d for q, d in first.items() if q in qrels}
    for row in rep["sweep"]:
        direct, _ = rerank(model, coll.queries, coll.corpus, truncate(judged, row["k"]), row["k"], bf16=False)
        want = evaluate(qrels, direct, ["nDCG@10", "RR@10"])
        assert row["nDCG@10"] == pytest.approx(want["nDCG@10"], abs=1e-6)
        assert row["RR@10"] == pytest.approx(want["RR@10"], abs=1e-6)
        assert row["ms_per_query"] > 0 and row["timed_queries"] == 2
    assert rep["first_stage"] == pytest.approx(evaluate(qrels, judged, ["nDCG@10", "RR@10"]))
    assert rep["main_k"] == 6 and rep["timing"]["sampled"] is True


def test_report_cli(tmp_path, tiny_ce_dir, tiny_collection, capsys):
    root, run_path = tiny_collection
    out = tmp_path / "rep"
    rc = main(["report", "--model", str(tiny_ce_dir), "--collection", str(root), "--split", "test", "--run",
               str(run_path), "--out", str(out), "--cutoffs", "2", "4", "--timing-queries", "0",
               "--resamples", "100", "--no-bf16"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert [r["k"] for r in rep["sweep"]] == [2, 4] and rep["timing"]["queries"] == 5
    assert {"nDCG@10", "RR@10", "ms_per_query", "vs_first_stage_nDCG@10"} <= set(rep["sweep"][0])
    sig = rep["significance"]
    assert sig["wins"] + sig["losses"] + sig["ties"] == sig["queries"] == 5
    assert (out / "cutoffs.png").read_bytes()[:4] == b"\x89PNG"
    assert "first stage" in (out / "cutoffs.md").read_text()
    assert len(read_run(out / "reranked_top4.trec")) == 5
    assert "cutoff sweep" in capsys.readouterr().out


def test_report_reuses_known_scores(tmp_path, tiny_ce_dir, tiny_collection):
    """--scores: pairs scored by an earlier rerank are taken from it (a planted score proves it),
    the rest are scored; the sweep equals scoring everything when the known scores are genuine."""
    root, run_path = tiny_collection
    coll = Collection(root)
    model = load_reranker(tiny_ce_dir)
    first = read_run(run_path, coll.queries, coll.corpus)
    earlier, _ = rerank(model, coll.queries, coll.corpus, first, 3, bf16=False)
    kw = dict(cutoffs=[2, 5], measures=["nDCG@10"], timing_queries=1, bf16=False, n_resamples=50, progress=False)
    full = cutoff_sweep(model, coll, "test", first, **kw)
    reused = cutoff_sweep(model, coll, "test", first, known_scores=earlier, **kw)
    judged = [q for q in first if q in coll.qrels("test")]
    assert reused["scoring"]["reused_pairs"] == sum(min(3, len(first[q])) for q in judged)
    assert reused["scoring"]["pairs"] == sum(min(5, len(first[q])) for q in judged) - reused["scoring"]["reused_pairs"]
    for a, b in zip(full["sweep"], reused["sweep"]):
        assert a["nDCG@10"] == pytest.approx(b["nDCG@10"], abs=1e-6)

    q = judged[0]
    planted = {**earlier, q: [(earlier[q][-1][0], 1e9)] + earlier[q][:-1]}  # the known scores must win
    rep = cutoff_sweep(model, coll, "test", first, known_scores=planted, **kw)
    assert rep["_runs"][5][q][0] == (earlier[q][-1][0], 1e9)

    out = tmp_path / "rep"
    known = tmp_path / "earlier.trec"
    from rerankforge.data.trec import write_run
    write_run(known, earlier, tag="x")
    rc = main(["report", "--model", str(tiny_ce_dir), "--collection", str(root), "--split", "test", "--run",
               str(run_path), "--out", str(out), "--cutoffs", "2", "5", "--timing-queries", "1", "--resamples", "50",
               "--no-bf16", "--scores", str(known)])
    assert rc == 0
    scoring = json.loads((out / "report.json").read_text())["scoring"]
    assert scoring["reused_from"] == str(known) and scoring["reused_pairs"] == reused["scoring"]["reused_pairs"]


def test_report_rejects_unswept_compare_k(tmp_path, tiny_ce_dir, tiny_collection):
    root, run_path = tiny_collection
    rc = main(["report", "--model", str(tiny_ce_dir), "--collection", str(root), "--split", "test", "--run",
               str(run_path), "--out", str(tmp_path / "r"), "--cutoffs", "2", "4", "--compare-k", "3"])
    assert rc == 2


def test_write_report_keeps_runs(tmp_path):
    rep = {"collection": "c", "split": "s", "queries": 1, "cutoffs": [1], "measures": ["nDCG@10", "RR@10"],
           "test_measure": "nDCG@10", "first_stage": {"nDCG@10": 0.5, "RR@10": 0.5}, "main_k": 1,
           "sweep": [{"k": 1, "nDCG@10": 1.0, "RR@10": 1.0, "ms_per_query": 2.0, "ms_p50": 2.0, "ms_p95": 2.0,
                      "vs_first_stage_nDCG@10": {"delta": 0.5, "p_t_test": 1.0, "p_randomization": 1.0,
                                                 "wins": 1, "losses": 0, "ties": 0}}],
           "_runs": {1: {"q": [("d", 1.0)]}}}
    paths = write_report(tmp_path, rep)
    assert "_runs" not in json.loads(paths["json"].read_text()) and rep["_runs"]
    assert read_run(paths["run"]) == {"q": [("d", 1.0)]}
