"""scripts/bench_speed.py --quick: the CI smoke run on tiny models writes bench_speed.json with the
documented schema. Not a timing: the numbers of a tiny model on a shared CI box mean nothing."""

from __future__ import annotations

import json

import pytest

from helpers import load_script


pytest.importorskip("sentence_transformers.cross_encoder")


def load_bench():
    return load_script("bench_speed")


def test_quick_run_writes_the_schema(tmp_path, tiny_ce_dir, tiny_bert_dir, tiny_collection):
    bench = load_bench()
    collection, _run = tiny_collection
    out = tmp_path / "bench_speed.json"
    bench.main(["--quick", "--model", str(tiny_ce_dir), "--quality-model", str(tiny_bert_dir),
                "--colbert-model", str(tiny_bert_dir), "--quality-ce", str(tiny_ce_dir),
                "--collection", str(collection), "--out", str(out)])
    data = json.loads(out.read_text())
    for key in ("cpu", "ceiling", "train", "train_pointwise", "inference", "quality", "colbert", "settings"):
        assert key in data, key
    assert {"threads", "native_bf16", "flags"} <= set(data["cpu"])
    for section in ("train", "train_pointwise", "inference"):
        block = data[section]
        assert block["rerankforge"] > 0 and block["sentence_transformers"] > 0
        assert block["ratio"] == pytest.approx(block["rerankforge"] / block["sentence_transformers"], rel=0.01)
        for variant in block["variants"].values():
            for fw in ("rerankforge", "sentence_transformers"):
                if isinstance(variant, dict) and fw in variant:
                    assert {"pairs_per_s", "tokens_per_s", "gflops"} <= set(variant[fw])
    for section in ("train", "train_pointwise"):
        for variant in data[section]["variants"].values():
            # rerankforge with torch's own dropout, timed in the same alternation (the switch's share)
            assert variant["rerankforge_torch_dropout"]["pairs_per_s"]["median"] > 0
            assert variant["ratio_torch_dropout"] == pytest.approx(
                variant["rerankforge_torch_dropout"]["pairs_per_s"]["median"]
                / variant["sentence_transformers"]["pairs_per_s"]["median"], rel=0.01)
    inf = data["inference"]["variants"]
    assert "rerankforge_int8" in inf and inf["rerankforge_int8"]["agreement_vs_float"]["spearman"] > 0.5
    # same weights, same truncation: both frameworks' float32 scores agree
    assert inf["sentence_transformers_fp32"]["agreement_vs_float"]["max_abs_diff"] < 1e-3
    # the fast path scores what the plain model scores (rounding apart); its compile is timed apart
    assert inf["rerankforge_fast"]["agreement_vs_float"]["spearman"] > 0.5  # 4 pairs: bf16 on a random tiny model
    assert data["inference"]["fast_first_pass_seconds"]["rerankforge_fast"] > 0
    assert "sentence_transformers_bf16_weights" in inf
    assert set(data["inference"]["ratio_vs_best_sentence_transformers"]) >= {"rerankforge", "rerankforge_fast"}
    ce = data["quality"]["cross_encoder_fast"]
    assert set(ce["variants"]) == {"plain_bf16", "fast_bf16", "plain_float32"}
    assert ce["fast_minus_plain_bf16"] == pytest.approx(
        ce["variants"]["fast_bf16"]["nDCG@10"] - ce["variants"]["plain_bf16"]["nDCG@10"], abs=1e-4)
    assert "skipped" in data["colbert"]["pylate"]
    assert data["quality"]["variants"]["int8"]["nDCG@10"] >= 0
    # --merge keeps other sections and a GPU run nests under "gpu"
    bench.write(out, {"cpu": {"x": 1}}, merge=True, nest="gpu")
    merged = json.loads(out.read_text())
    assert merged["gpu"] == {"cpu": {"x": 1}} and "train" in merged
