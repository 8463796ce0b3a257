"""Paired significance tests and per-query wins/losses between two systems on the same queries.

* paired t-test (``scipy.stats.ttest_rel``), two-sided;
* paired randomisation (permutation) test (Fisher; Smucker, Allan & Carterette, CIKM 2007):
  under H0 each query's pair of scores is exchangeable, so the sign of each difference is flipped
  at random; p = share of sign assignments whose |mean difference| reaches the observed one.
  Exact (all 2^n assignments) for n <= ``exact_max_n``, otherwise Monte Carlo with the
  ``(hits + 1) / (R + 1)`` estimate, which never reports p = 0.
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


def randomization_test(a, b, n_resamples: int = 10_000, seed: int = 0, exact_max_n: int = 16) -> float:
    """Two-sided p-value of the paired sign-flip randomisation test on mean(b − a)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = d.size
    if n == 0:
        return 1.0
    observed = abs(d.mean())
    if n <= exact_max_n:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        stats = np.abs(signs @ d) / n
        return float(np.mean(stats >= observed - _EPS))
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < n_resamples:
        m = min(2000, n_resamples - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - _EPS))
        done += m
    return (hits + 1) / (n_resamples + 1)


def compare(a: Mapping[str, float], b: Mapping[str, float], n_resamples: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Compare per-query scores of system ``a`` (baseline) and ``b``: means, both tests, wins/losses."""
    _, x, y = _paired(a, b)
    t, p_t = paired_t_test(x, y)
    d = y - x
    return {"queries": int(x.size), "mean_a": float(x.mean()) if x.size else 0.0,
            "mean_b": float(y.mean()) if y.size else 0.0, "delta": float(d.mean()) if d.size else 0.0,
            "t": t, "p_t_test": p_t, "p_randomization": randomization_test(x, y, n_resamples, seed),
            "randomization_resamples": n_resamples if x.size > 16 else 2 ** int(x.size),
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
