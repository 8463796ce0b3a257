"""Speed switches keep scores: bf16="auto" (float32 where the CPU has no bf16 hardware) and
int8 dynamic quantisation (lossy: bounded here on a tiny model, measured on SciFact by
scripts/bench_speed.py's quality section)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from rerankforge.models import precision
from rerankforge.models.precision import Float32Linear, use_bf16

CPU = torch.device("cpu")


def test_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    assert use_bf16("auto", CPU) is False
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    assert use_bf16("auto", CPU) is True
    assert use_bf16(False, CPU) is False
    assert use_bf16(True, CPU) is torch.backends.mkldnn.is_available()  # bf16 hardware: bf16
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    assert use_bf16(True, CPU) is False  # no bf16 hardware: float32, never emulated bf16
    with pytest.raises(ValueError, match="auto"):
        use_bf16("yes", CPU)


def test_native_bf16_probe_runs():
    assert isinstance(precision.cpu_native_bf16(), bool)


def _pairs(n=48, seed=0):
    rng = np.random.default_rng(seed)
    words = "vitamin d bone fracture risk statin heart trial cells protein gene dose mice".split()
    qs = [" ".join(rng.choice(words, 4)) for _ in range(n)]
    ds = [" ".join(rng.choice(words, int(rng.integers(5, 40)))) for _ in range(n)]
    return qs, ds


def test_auto_scores_equal_float32_on_a_cpu_without_bf16(monkeypatch, tiny_ce_dir):
    from rerankforge.models.cross_encoder import CrossEncoder

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    model = CrossEncoder(str(tiny_ce_dir))
    qs, ds = _pairs()
    np.testing.assert_array_equal(model.score_pairs(qs, ds, bf16="auto"), model.score_pairs(qs, ds, bf16=False))


def test_int8_scores_track_float_scores(tiny_ce_dir):
    from rerankforge.models.cross_encoder import CrossEncoder

    qs, ds = _pairs()
    ref = CrossEncoder(str(tiny_ce_dir)).score_pairs(qs, ds, bf16=False)
    q8 = CrossEncoder(str(tiny_ce_dir)).quantize_int8()
    assert q8.quantized == "int8" and type(q8.model.classifier) is Float32Linear  # the head stays float32
    assert not any(type(m) is torch.nn.Linear for m in q8.modules())
    got = q8.score_pairs(qs, ds, bf16=True)  # autocast is skipped for quantised models
    # tolerance: the fixture's weights are wide random normals (std 0.3, to spread its logits), far
    # harder to quantise than trained weights; measured here: median error 0.16 of the
    # logit std, Spearman 0.95; the typical error stays a small part of the spread
    # (real-model quality is measured on SciFact by scripts/bench_speed.py --sections quality)
    assert float(np.median(np.abs(got - ref))) < 0.25 * float(ref.std())
    assert spearmanr(got, ref)[0] > 0.9
    assert q8.quantize_int8() is q8  # idempotent


def test_int8_bi_encoder(tiny_bert_dir):
    from rerankforge.models.bi_encoder import BiEncoder

    qs, ds = _pairs(24)
    ref = BiEncoder(str(tiny_bert_dir)).score_pairs(qs, ds, bf16=False)
    got = BiEncoder(str(tiny_bert_dir)).quantize_int8().score_pairs(qs, ds)
    assert spearmanr(got, ref)[0] > 0.98
