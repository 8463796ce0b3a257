"""scripts/compare_dropout_runs.py: paired nDCG@10 of two reranked runs on bundled SciFact test."""

import json

from helpers import load_script

from rerankforge.data.beir import Collection


def write_run_dir(path, ranking, pairs_per_s=5.0):
    path.mkdir()
    lines = [f"{q} Q0 {d} {r + 1} {10.0 - r} x" for q, docs in ranking.items() for r, d in enumerate(docs)]
    (path / "reranked.trec").write_text("\n".join(lines) + "\n")
    (path / "train_summary.json").write_text(json.dumps({"pairs": 64, "train_seconds": 12.8, "pairs_per_s": pairs_per_s}))
    (path / "eval.json").write_text(json.dumps({"reranked": {"nDCG@10": 0.5}}))


def test_delta_sign_and_identity(tmp_path):
    script = load_script("compare_dropout_runs")
    qrels = Collection.of("bundled:scifact").qrels("test")
    q = sorted(qrels)[:2]
    good = {x: list(qrels[x])[:1] + ["nonrelevant-doc"] for x in q}
    bad = {x: ["nonrelevant-doc"] for x in q}
    write_run_dir(tmp_path / "fast", good)
    write_run_dir(tmp_path / "torch", bad)
    write_run_dir(tmp_path / "same", good)
    out = script.main(str(tmp_path / "fast"), str(tmp_path / "torch"))
    assert out["fast_minus_torch_dropout"]["delta"] > 0 and out["fast_minus_torch_dropout"]["wins"] == 2
    assert out["torch_dropout"]["pairs"] == 64
    same = script.main(str(tmp_path / "fast"), str(tmp_path / "same"))
    assert same["fast_minus_torch_dropout"]["delta"] == 0.0
