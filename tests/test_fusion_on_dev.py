"""scripts/fusion_on_dev.py and pipelines.steps.choose_fusion_alpha: the fusion weight comes from
dev queries alone (changing the test judgments cannot change it) and the fused run is the
documented fusion at that weight."""

from __future__ import annotations

import shutil

import pytest

from helpers import load_script
from rerankforge.errors import ConfigError


def run(coll, model, tmp_path, name):
    out = tmp_path / f"{name}.json"
    result = load_script("fusion_on_dev").main(["--model", str(model), "--collection", str(coll), "--dev-split",
                                                "train", "--depth", "6", "--no-bf16", "--out", str(out)])
    assert out.exists()
    return result


def test_alpha_is_the_dev_argmax_and_ignores_test_judgments(tmp_path, tiny_ce_dir, tiny_collection):
    coll, _ = tiny_collection
    a = run(coll, tiny_ce_dir, tmp_path, "a")
    curve = {float(k): v for k, v in a["fusion"]["curve"].items()}
    assert len(curve) == 21 and a["fusion"]["alpha"] == max(curve, key=lambda x: (curve[x], -x))
    assert a["fusion"]["chosen_on"]["split"] == "train"
    # the same collection with every test judgment moved to another document
    other = tmp_path / "other"
    shutil.copytree(coll, other)
    test_qrels = other / "qrels" / "test.tsv"
    lines = test_qrels.read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("query-id")]
    rows = [ln.split("\t") for ln in lines if ln and not ln.startswith("query-id")]
    docs = sorted({r[1] for r in rows})
    moved = [f"{q}\t{docs[(docs.index(d) + 1) % len(docs)]}\t{g}" for q, d, g in rows]
    test_qrels.write_text("\n".join(header + moved) + "\n")
    b = run(other, tiny_ce_dir, tmp_path, "b")
    assert b["fusion"] == a["fusion"]
    assert b["first_stage"] != a["first_stage"]  # the test judgments did change what is reported


def test_fused_run_is_the_fusion_at_alpha(tmp_path, tiny_ce_dir, tiny_collection):
    from rerankforge.data.beir import Collection
    from rerankforge.eval.metrics import evaluate
    from rerankforge.models.base import load_reranker
    from rerankforge.pipelines.steps import evaluate_reranker
    from rerankforge.rerank.fusion import fuse_with_first_stage

    coll, _ = tiny_collection
    a = run(coll, tiny_ce_dir, tmp_path, "a")
    collection = Collection(coll)
    report = evaluate_reranker(load_reranker(tiny_ce_dir), collection, "test", None, 6, ["nDCG@10"], 64, False,
                               progress=False)
    runs = report["_runs"]
    fused = fuse_with_first_stage(runs["first_stage"], runs["reranked"], a["fusion"]["alpha"], "zscore")
    assert a["fused"] == evaluate(collection.qrels("test"), fused, ["nDCG@10", "RR@10"])
    assert a["pure"]["nDCG@10"] == report["reranked"]["nDCG@10"]
    cmp = a["fused_vs_first_stage"]
    assert cmp["mean_a"] == pytest.approx(a["first_stage"]["nDCG@10"])
    assert cmp["mean_b"] == pytest.approx(a["fused"]["nDCG@10"])


def test_choose_fusion_alpha_refuses_test(tiny_ce_dir, tiny_collection):
    from rerankforge.pipelines.steps import choose_fusion_alpha

    coll, _ = tiny_collection
    with pytest.raises(ConfigError, match="test judgments"):
        choose_fusion_alpha(str(tiny_ce_dir), coll, "test", {"q": [("d", 1.0)]})
