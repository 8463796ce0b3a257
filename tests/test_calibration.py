"""Calibration: metrics by hand, Platt/temperature fits, folding into the head (rerankforge and
sentence-transformers agree), the scoring-time hook for other model types, the calibrate CLI."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import expit

from helpers import DOCS, QUERIES
from rerankforge.cli import main
from rerankforge.errors import ConfigError
from rerankforge.rerank.threshold import apply_threshold
from rerankforge.calibration.fit import (Calibration, brier_score, calibration_metrics,
                                          expected_calibration_error, fit_platt, fit_temperature, fold_into_head,
                                          labelled_pairs, log_loss, log_loss_from_logits, reliability_bins)
from rerankforge.models.base import load_reranker

# --- metrics by hand ---------------------------------------------------------------------------

def test_ece_brier_logloss_by_hand():
    p, y = [0.1, 0.4, 0.8, 0.9], [0, 1, 1, 1]
    assert expected_calibration_error(p, y) == pytest.approx((0.1 + 0.6 + 0.2 + 0.1) / 4)
    assert brier_score(p, y) == pytest.approx((0.01 + 0.36 + 0.04 + 0.01) / 4)
    assert log_loss(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.8) + math.log(0.9)) / 4)
    # 0.30 and 0.32 share bin 4 of 15: |mean(1, 0) - mean(0.30, 0.32)| weighted 2/3
    assert expected_calibration_error([0.30, 0.32, 0.9], [1, 0, 1]) == pytest.approx((2 * 0.19 + 0.1) / 3)
    bins = reliability_bins([1.0, 0.0], [1, 0], 15)
    assert bins[-1]["count"] == 1 and bins[0]["count"] == 1  # p = 1 lands in the last bin
    assert expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0


def test_logits_metrics_match_probability_metrics():
    z = np.array([-3.0, -0.5, 0.2, 4.0])
    y = np.array([0, 1, 0, 1])
    m = calibration_metrics(z, y)
    assert m["log_loss"] == pytest.approx(log_loss(expit(z), y))
    assert m["Brier"] == pytest.approx(brier_score(expit(z), y))
    assert log_loss_from_logits([800.0], [0]) == pytest.approx(800.0)  # no overflow, no clipping


# --- fitting -----------------------------------------------------------------------------------

def test_platt_recovers_known_parameters():
    rng = np.random.default_rng(0)
    s = rng.normal(0.5, 1.5, 40_000)
    y = (rng.random(s.size) < expit(2.0 * s - 1.0)).astype(float)
    cal = fit_platt(s, y)
    assert cal.a == pytest.approx(2.0, abs=0.08)
    assert cal.b == pytest.approx(-1.0, abs=0.08)
    raw = calibration_metrics(s, y)
    assert calibration_metrics(cal.logits(s), y)["log_loss"] < raw["log_loss"]


def test_temperature_recovers_known_temperature():
    rng = np.random.default_rng(1)
    s = rng.normal(0.0, 4.0, 40_000)
    y = (rng.random(s.size) < expit(s / 2.5)).astype(float)
    cal = fit_temperature(s, y)
    assert cal.b == 0.0
    assert cal.temperature == pytest.approx(2.5, rel=0.05)


def test_fit_needs_both_classes():
    with pytest.raises(ConfigError, match="need both classes"):
        fit_platt([0.1, 0.2, 0.3], [0, 0, 0])


def test_labelled_pairs_binarise_and_treat_unjudged_as_negative():
    run = {"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("x", 1.0)], "q9": [("z", 1.0)]}
    qrels = {"q1": {"a": 1, "c": 2, "zz": 2}, "q2": {"x": 0}}
    pairs = labelled_pairs(run, qrels, depth=2, rel_threshold=2)
    assert list(zip(pairs.query_ids, pairs.doc_ids)) == [("q1", "a"), ("q1", "b"), ("q2", "x")]
    assert pairs.labels.tolist() == [0.0, 0.0, 0.0]
    assert labelled_pairs(run, qrels, depth=3, rel_threshold=1).labels.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_threshold_drops_low_probabilities():
    run = {"q": [("a", 2.0), ("b", 0.0), ("c", -1.0)], "r": [("d", -5.0)]}
    assert apply_threshold(run, 0.5) == {"q": [("a", 2.0), ("b", 0.0)]}
    assert apply_threshold(run, 0.0) == run
    with pytest.raises(ConfigError):
        apply_threshold(run, 1.5)


# --- folding and the scoring-time hook ---------------------------------------------------------

def test_folded_head_scores_identically_in_rerankforge_and_sentence_transformers(tmp_path, tiny_ce_dir):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    model = load_reranker(tiny_ce_dir)
    raw = model.score_pairs(QUERIES, DOCS, bf16=False).astype(np.float64)
    a, b = 1.7, -0.3
    assert fold_into_head(model.model, a, b)
    model.set_calibration({"method": "platt", "a": a, "b": b, "folded_into_head": True})
    model.save_pretrained(tmp_path / "cal")

    ours = load_reranker(tmp_path / "cal").score_pairs(QUERIES, DOCS, bf16=False)
    np.testing.assert_allclose(ours, a * raw + b, atol=1e-4)
    st = STCrossEncoder(str(tmp_path / "cal"), device="cpu")
    probs = st.predict(list(zip(QUERIES, DOCS)), batch_size=8)
    np.testing.assert_allclose(probs, expit(a * raw + b), atol=1e-4)
    meta = json.loads((tmp_path / "cal" / "rerankforge.json").read_text())
    assert meta["calibration"]["a"] == a and meta["calibration"]["folded_into_head"] is True


def test_unfoldable_head_is_left_alone():
    class BiasFree(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.score = torch.nn.Linear(4, 1, bias=False)

    m = BiasFree()
    before = m.score.weight.detach().clone()
    assert not fold_into_head(m, 2.0, 0.5)  # no bias to carry b
    assert torch.equal(m.score.weight, before)
    assert fold_into_head(m, 2.0, 0.0)  # temperature scaling only scales w
    assert torch.allclose(m.score.weight, 2.0 * before)


def test_scoring_time_calibration_survives_save_and_load(tmp_path, tiny_ce_dir):
    model = load_reranker(tiny_ce_dir)
    raw = model.score_pairs(QUERIES, DOCS, bf16=False)
    model.set_calibration({"method": "platt", "a": 0.5, "b": 2.0, "folded_into_head": False})
    np.testing.assert_allclose(model.score_pairs(QUERIES, DOCS, bf16=False), 0.5 * raw + 2.0, atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    again = load_reranker(tmp_path / "m")
    np.testing.assert_allclose(again.score_pairs(QUERIES, DOCS, bf16=False), 0.5 * raw + 2.0, atol=1e-5)
    again.set_calibration(None)
    np.testing.assert_allclose(again.score_pairs(QUERIES, DOCS, bf16=False), raw, atol=1e-6)


def test_colbert_calibration_is_stored_and_applied(tmp_path, tiny_bert_dir, tiny_collection):
    from rerankforge.calibration.export import calibrate_reranker
    from rerankforge.models import MODELS

    torch.manual_seed(0)
    MODELS["colbert"].from_base(str(tiny_bert_dir), max_length=48, dim=16).save_pretrained(tmp_path / "colbert")
    root, run = tiny_collection
    rec = calibrate_reranker(tmp_path / "colbert", root, "train", "test", tmp_path / "out", "platt", run=run,
                             depth=6, progress=False)
    assert rec["folded_into_head"] is False
    assert rec["export_check_max_abs_diff"] < 1e-4
    meta = json.loads((tmp_path / "out" / "model" / "rerankforge.json").read_text())
    assert meta["model_type"] == "colbert"
    assert meta["calibration"]["a"] == pytest.approx(rec["a"]) and meta["calibration"]["folded_into_head"] is False
    raw = load_reranker(tmp_path / "colbert").score_pairs(QUERIES, DOCS, bf16=False)
    cal = load_reranker(tmp_path / "out" / "model").score_pairs(QUERIES, DOCS, bf16=False)
    np.testing.assert_allclose(cal, rec["a"] * raw + rec["b"], atol=1e-4)


# --- the whole calibrate step ------------------------------------------------------------------

def test_calibrate_cli_exports_a_folded_cross_encoder(tmp_path, tiny_ce_dir, tiny_collection):
    from sentence_transformers import CrossEncoder as STCrossEncoder

    root, run = tiny_collection
    out = tmp_path / "cal"
    rc = main(["calibrate", "--model", str(tiny_ce_dir), "--collection", str(root), "--run", str(run),
               "--fit-split", "train", "--eval-split", "test", "--method", "platt", "--out", str(out),
               "--depth", "6", "--rel-threshold", "1"])
    assert rc == 0
    rec = json.loads((out / "calibration.json").read_text())
    assert {"method", "a", "b", "fit_split", "eval_split", "before", "after"} <= set(rec)
    assert set(rec["before"]) == set(rec["after"]) == {"ECE", "Brier", "log_loss"}
    assert rec["fit_split"] == "train" and rec["eval_split"] == "test" and rec["folded_into_head"] is True
    assert rec["eval_pairs"] == 5 * 6 and rec["eval_positive_rate"] == pytest.approx(2 / 6)
    # the fit minimises log-loss on the fit split: never worse than the raw sigmoid there
    assert rec["fit"]["after"]["log_loss"] <= rec["fit"]["before"]["log_loss"] + 1e-9
    assert rec["export_check_max_abs_diff"] < 1e-4
    temp = rec["other_methods"]["temperature"]  # reported beside, fitted on the same scores
    assert temp["b"] == 0.0 and temp["a"] > 0 and set(temp["after"]) == {"ECE", "Brier", "log_loss"}
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"

    raw = load_reranker(tiny_ce_dir).score_pairs(QUERIES, DOCS, bf16=False).astype(np.float64)
    want = Calibration("platt", rec["a"], rec["b"]).probs(raw)
    st = STCrossEncoder(str(out / "model"), device="cpu").predict(list(zip(QUERIES, DOCS)))
    np.testing.assert_allclose(st, want, atol=1e-4)
    card = (out / "model" / "README.md").read_text()
    assert "## Calibration" in card and f"{rec['a']:.4f}" in card and "rerankforge calibrate" in card


def test_calibrate_rejects_same_split(tmp_path, tiny_ce_dir, tiny_collection):
    root, run = tiny_collection
    rc = main(["calibrate", "--model", str(tiny_ce_dir), "--collection", str(root), "--run", str(run),
               "--fit-split", "test", "--eval-split", "test", "--out", str(tmp_path / "x")])
    assert rc == 2


def test_scoring_time_calibration_follows_copies(tiny_ce_dir):
    import copy
    import pickle

    model = load_reranker(tiny_ce_dir)
    model.set_calibration({"method": "platt", "a": 2.0, "b": 0.0, "folded_into_head": False})
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.model.classifier.bias.add_(1.0)  # the copy's own weights must be the ones scoring
    base = model.score_pairs(QUERIES, DOCS, bf16=False)
    np.testing.assert_allclose(twin.score_pairs(QUERIES, DOCS, bf16=False), base + 2.0, atol=1e-5)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.score_pairs(QUERIES, DOCS, bf16=False), base, atol=1e-6)
