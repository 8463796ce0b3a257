"""The public verbs end to end on small real data (tiny model so it stays fast)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_collection, make_groups

ROOT = Path(__file__).resolve().parents[1]


def rf(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "rerankforge", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    tmp = tmp_path_factory.mktemp("pipeline")
    groups = make_groups(n=10, size=6)
    coll = make_collection(tmp / "coll", groups)
    from rerankforge.data.groups import write_groups

    write_groups(tmp / "g.jsonl", groups)
    cfg = tmp / "c.yaml"
    cfg.write_text(f"output_dir: {tmp / 'out'}\nmodel: {{name_or_path: {tiny_bert_dir}, max_length: 32}}\n"
                   f"data: {{train_groups: {tmp / 'g.jsonl'}, group_size: 6}}\noptim: {{epochs: 3, lr: 1e-3}}\n"
                   f"eval: {{collection: {coll}, split: test, depth: 6}}\nprogress: false\nbf16: false\n")
    rf("train", "--config", cfg)
    return tmp, coll


def test_train_writes_eval_and_runs(trained):
    tmp, _ = trained
    report = json.loads((tmp / "out" / "eval.json").read_text())
    assert set(report) >= {"first_stage", "reranked", "rerank_speed"}
    assert set(report["reranked"]) == {"nDCG@10", "RR@10", "R@100", "AP@100"}
    assert (tmp / "out" / "reranked.trec").exists() and (tmp / "out" / "first_stage.trec").exists()


def test_rerank_and_evaluate_cli(trained):
    tmp, coll = trained
    first = tmp / "first.trec"
    # a deliberately bad first stage: the positive of every query last
    from rerankforge.data import Collection, write_run

    c = Collection(coll)
    bad = {q: sorted(((d, 0.0 if d in c.qrels("test")[q] else 1.0) for d in c.corpus.ids if d.startswith(f"d{q[1:]}-")),
                     key=lambda e: -e[1]) for q in c.queries}
    write_run(first, bad)
    out = tmp / "reranked.trec"
    proc = rf("rerank", "--model", tmp / "out" / "model", "--collection", coll, "--split", "test", "--run", first,
              "--depth", 6, "--out", out, "--no-bf16")
    assert "pairs/s" in proc.stdout
    js = tmp / "eval.json"
    rf("evaluate", "--collection", coll, "--split", "test", "--run", first, "--run", out, "--json", js,
       "--measures", "nDCG@10", "RR@10")
    result = json.loads(js.read_text())
    assert set(result) == {"first.trec", "reranked.trec"}
    assert result["first.trec"]["RR@10"] == pytest.approx(1 / 6)
    assert result["reranked.trec"]["RR@10"] > result["first.trec"]["RR@10"]  # the trained model learned something


def test_evaluate_rejects_malformed_run(trained, tmp_path):
    _, coll = trained
    bad = tmp_path / "bad.trec"
    bad.write_text("q0 Q0 d0-1 1 1.0 t\nq0 Q0 d0-2 2\n")
    proc = rf("evaluate", "--collection", coll, "--split", "test", "--run", bad, check=False)
    assert proc.returncode == 2 and "bad.trec:2: expected 6 fields" in proc.stderr


def test_quickstart_smoke_on_bundled_scifact(tmp_path, tiny_bert_dir):
    """The real quickstart path on the bundled SciFact, shrunk: tiny model, a few steps, shallow rerank."""
    out = tmp_path / "qs"
    proc = rf("quickstart", "--out", out, f"train.model.name_or_path={tiny_bert_dir}", "train.optim.max_steps=3",
              "train.model.max_length=64", "holdout_queries=20", "rerank_depth=5", "train.progress=false")
    report = json.loads((out / "report.json").read_text())
    assert {"first_stage", "reranked", "pure_reranker", "fusion"} <= set(report)
    assert report["first_stage"]["nDCG@10"] > 0.67  # BM25 on SciFact test (published 0.665-0.69)
    assert 0.0 <= report["fusion"]["alpha"] <= 1.0
    assert "reranker alone (pure)" in proc.stdout
    assert "nearly_constant" in report["score_spread"] and "collapsed" in report["train_summary"]["collapse"]
    if report["fusion"]["alpha"] == 0.0:
        assert report["reranked"] == report["pure_reranker"]
