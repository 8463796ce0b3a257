import math

import numpy as np
import pytest

from rerankforge.errors import ConfigError
from rerankforge.retrieve.fusion import fuse, normalize_run, normalize_scores, rrf, score_fusion

A = {"q": [("d1", 10.0), ("d2", 8.0), ("d3", 2.0)], "only_a": [("x", 1.0)]}
B = {"q": [("d3", 0.9), ("d1", 0.5), ("d4", 0.1)]}


def test_normalize_by_hand():
    np.testing.assert_allclose(normalize_scores([10, 8, 2], "minmax"), [1.0, 0.75, 0.0])
    z = normalize_scores([10, 8, 2], "zscore")
    mean, std = 20 / 3, math.sqrt(((10 - 20 / 3) ** 2 + (8 - 20 / 3) ** 2 + (2 - 20 / 3) ** 2) / 3)
    np.testing.assert_allclose(z, [(10 - mean) / std, (8 - mean) / std, (2 - mean) / std])
    np.testing.assert_allclose(normalize_scores([4, -2], "max"), [1.0, -0.5])
    np.testing.assert_allclose(normalize_scores([3, 3], "minmax"), [0, 0])  # no preference in a flat list
    np.testing.assert_allclose(normalize_scores([3, 3], "zscore"), [0, 0])
    assert normalize_scores([], "minmax").size == 0
    with pytest.raises(ConfigError):
        normalize_scores([1], "softmax")
    assert normalize_run(A, "minmax")["q"] == [("d1", 1.0), ("d2", 0.75), ("d3", 0.0)]


def test_rrf_by_hand():
    fused = rrf([A, B], k=60)
    expected = {"d1": 1 / 61 + 1 / 62, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 63}
    assert [d for d, _ in fused["q"]] == sorted(expected, key=lambda d: -expected[d])
    for d, s in fused["q"]:
        assert s == pytest.approx(expected[d])
    assert fused["only_a"] == [("x", 1 / 61)]
    weighted = dict(rrf([A, B], k=1, weights=[2.0, 1.0])["q"])
    assert weighted["d3"] == pytest.approx(2 / 4 + 1 / 2)
    assert [d for d, _ in rrf([A, B], depth=2)["q"]] == ["d1", "d3"]


def test_rrf_ties_are_broken_by_doc_id():
    r1 = {"q": [("b", 1.0)]}
    r2 = {"q": [("a", 1.0)]}
    assert [d for d, _ in rrf([r1, r2])["q"]] == ["a", "b"]


def test_score_fusion_minmax_by_hand():
    fused = dict(score_fusion([A, B], weights=[0.5, 0.5], norm="minmax")["q"])
    # A minmax: d1 1, d2 .75, d3 0 ; B minmax: d3 1, d1 .5, d4 0 ; missing -> that run's minimum (0)
    assert fused["d1"] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert fused["d2"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.0)
    assert fused["d3"] == pytest.approx(0.5 * 0 + 0.5 * 1)
    assert fused["d4"] == pytest.approx(0.0)


def test_score_fusion_zscore_missing_gets_run_minimum():
    fused = dict(score_fusion([A, B], norm="zscore")["q"])
    za = dict(normalize_run(A, "zscore")["q"])
    zb = dict(normalize_run(B, "zscore")["q"])
    assert fused["d2"] == pytest.approx(za["d2"] + min(zb.values()))
    assert fused["d4"] == pytest.approx(min(za.values()) + zb["d4"])
    per_run = dict(score_fusion([A, B], norm=["none", "minmax"])["q"])
    assert per_run["d1"] == pytest.approx(10.0 + 0.5)


def test_fuse_dispatch_and_errors():
    assert fuse([A, B], "rrf", k=10) == rrf([A, B], k=10)
    assert fuse([A, B], "score", norm="max") == score_fusion([A, B], norm="max")
    with pytest.raises(ConfigError):
        fuse([A, B], "borda")
    with pytest.raises(ConfigError):
        rrf([A, B], weights=[1.0])
    with pytest.raises(ConfigError):
        score_fusion([A, B], weights=[1.0, -1.0])
