"""Paired significance tests and per-query wins/losses between two systems on the same queries.

* paired t-test (``scipy.stats.ttest_rel``), two-sided;
* paired randomisation (permutation) test (Fisher; Smucker, Allan & Carterette, CIKM 2007),
  ``scipy.stats.permutation_test`` with ``permutation_type="samples"``: under H0 each query's
  pair of scores is exchangeable, so the pair is swapped (the difference's sign flipped) at
  random. Exact (all 2^n assignments) when 2^n <= ``n_resamples``, otherwise Monte Carlo; scipy's
  two-sided p is twice the smaller one-sided p, each estimated as ``(hits + 1) / (R + 1)``, so it
  is never 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_EPS = 1e-12


def _paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    missing = set(a) ^ set(b)
    if missing:
        raise ValueError(f"per-query scores cover different queries (e.g. {sorted(missing)[0]!r})")
    qids = sorted(a)
    return qids, np.array([a[q] for q in qids], dtype=np.float64), np.array([b[q] for q in qids], dtype=np.float64)


def paired_t_test(a, b) -> tuple[float, float]:
    """``(t, p)`` for mean(b − a) != 0; identical systems give ``(0, 1)``."""
    from scipy.stats import ttest_rel

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = b - a
    if d.size < 2 or np.all(np.abs(d - d.mean()) < _EPS):
        # zero variance: t is undefined; equal systems are not different, a constant shift is
        return (0.0, 1.0) if np.all(np.abs(d) < _EPS) else (float("inf") * np.sign(d.mean()), 0.0)
    res = ttest_rel(b, a)
    return float(res.statistic), float(res.pvalue)


def randomization_test(a, b, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomisation test on mean(b − a)."""
    from scipy.stats import permutation_test

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or np.all(np.abs(b - a) < _EPS):
        return 1.0
    res = permutation_test((a, b), lambda x, y, axis: np.mean(y - x, axis=axis), permutation_type="samples",
                           n_resamples=n_resamples, alternative="two-sided", random_state=seed, vectorized=True)
    return float(min(1.0, res.pvalue))


def compare(a: Mapping[str, float], b: Mapping[str, float], n_resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Compare per-query scores of system ``a`` (baseline) and ``b``: means, both tests, wins/losses."""
    _, x, y = _paired(a, b)
    t, p_t = paired_t_test(x, y)
    d = y - x
    return {"queries": int(x.size), "mean_a": float(x.mean()) if x.size else 0.0,
            "mean_b": float(y.mean()) if y.size else 0.0, "delta": float(d.mean()) if d.size else 0.0,
            "t": t, "p_t_test": p_t, "p_randomization": randomization_test(x, y, n_resamples, seed),
            "randomization_resamples": min(n_resamples, 2 ** int(x.size)),
            "wins": int(np.sum(d > _EPS)), "losses": int(np.sum(d < -_EPS)), "ties": int(np.sum(np.abs(d) <= _EPS))}


def wins_losses(a: Mapping[str, float], b: Mapping[str, float], top: int = 10,
                texts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Counts of queries where ``b`` beats / loses to / ties ``a``, and the ``top`` largest of each."""
    qids, x, y = _paired(a, b)
    rows = [{"query_id": q, "a": float(xa), "b": float(yb), "delta": float(yb - xa),
             **({"query": texts[q]} if texts and q in texts else {})} for q, xa, yb in zip(qids, x, y)]
    wins = sorted((r for r in rows if r["delta"] > _EPS), key=lambda r: (-r["delta"], r["query_id"]))
    losses = sorted((r for r in rows if r["delta"] < -_EPS), key=lambda r: (r["delta"], r["query_id"]))
    return {"wins": len(wins), "losses": len(losses), "ties": len(rows) - len(wins) - len(losses),
            "biggest_wins": wins[:top], "biggest_losses": losses[:top]}


def paired_bootstrap_ci(a: Mapping[str, float], b: Mapping[str, float], confidence: float = 0.95,
                        n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b − a) over queries resampled with replacement
    (Efron & Tibshirani 1993; Sakai, SIGIR 2006 for IR evaluation)."""
    _, x, y = _paired(a, b)
    d = y - x
    if d.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
