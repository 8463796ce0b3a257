"""Fusing runs: reciprocal rank fusion and weighted score fusion with per-query normalisation.

Everything works on :data:`~rerankforge.data.trec.Run` dicts (``{qid: [(docid, score), ...]}``,
best first) so it serves hybrid first stages and reranker/first-stage fusion alike.

* :func:`normalize_scores` / :func:`normalize_run` -- per-query ``minmax`` (to [0, 1]), ``zscore``
  (mean 0, std 1), ``max`` (divide by the maximum) or ``none``. A query whose scores are all equal
  maps to all zeros (minmax, zscore), so a flat list carries no preference.
* :func:`rrf` -- Cormack, Clarke & Büttcher (SIGIR 2009): ``score(d) = Σ_r w_r / (k + rank_r(d))``.
* :func:`score_fusion` -- ``score(d) = Σ_r w_r · norm_r(d)``. A document that run ``r`` did not
  retrieve gets that query's lowest normalised score in ``r`` (it ranked below everything ``r``
  returned), which is 0 under minmax.

Ties in the fused score are broken by document id so results are deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError

NORMALIZATIONS = ("minmax", "zscore", "max", "none")
FUSIONS = ("rrf", "score")


def normalize_scores(scores, method: str = "minmax") -> np.ndarray:
    """Normalise one query's scores (see module docstring)."""
    x = np.asarray(scores, dtype=np.float64)
    if method not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalisation {method!r}; choose from {', '.join(NORMALIZATIONS)}")
    if method == "none" or x.size == 0:
        return x.copy()
    if method == "minmax":
        span = x.max() - x.min()
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)
    if method == "zscore":
        std = x.std()
        return (x - x.mean()) / std if std > 0 else np.zeros_like(x)
    top = np.abs(x).max()
    return x / top if top > 0 else np.zeros_like(x)


def normalize_run(run: Mapping[str, list[tuple[str, float]]], method: str = "minmax") -> Run:
    """Per-query normalised copy of ``run`` (order unchanged)."""
    out: Run = {}
    for qid, docs in run.items():
        norm = normalize_scores([s for _, s in docs], method)
        out[qid] = [(d, float(v)) for (d, _), v in zip(docs, norm)]
    return out


def _weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ConfigError(f"{len(weights)} fusion weights for {n} runs")
    if any(w < 0 for w in weights):
        raise ConfigError(f"fusion weights must be >= 0, got {list(weights)}")
    return [float(w) for w in weights]


def _ranked(acc: dict[str, float], depth: int | None) -> list[tuple[str, float]]:
    items = sorted(acc.items(), key=lambda e: (-e[1], e[0]))
    return items[:depth] if depth else items


def rrf(runs: Sequence[Mapping[str, list[tuple[str, float]]]], k: float = 60.0,
        weights: Sequence[float] | None = None, depth: int | None = None) -> Run:
    """Reciprocal rank fusion; ranks are 1-based positions in each run's (best-first) list."""
    if k < 0:
        raise ConfigError(f"RRF k must be >= 0, got {k}")
    w = _weights(len(runs), weights)
    qids = _union_qids(runs)
    out: Run = {}
    for qid in qids:
        acc: dict[str, float] = {}
        for run, wr in zip(runs, w):
            for rank, (did, _) in enumerate(run.get(qid, ()), start=1):
                acc[did] = acc.get(did, 0.0) + wr / (k + rank)
        out[qid] = _ranked(acc, depth)
    return out


def score_fusion(runs: Sequence[Mapping[str, list[tuple[str, float]]]], weights: Sequence[float] | None = None,
                 norm: str | Sequence[str] = "minmax", depth: int | None = None) -> Run:
    """Weighted sum of per-query normalised scores (``norm`` may differ per run)."""
    w = _weights(len(runs), weights)
    norms = [norm] * len(runs) if isinstance(norm, str) else list(norm)
    if len(norms) != len(runs):
        raise ConfigError(f"{len(norms)} normalisations for {len(runs)} runs")
    normed = [normalize_run(run, m) for run, m in zip(runs, norms)]
    out: Run = {}
    for qid in _union_qids(runs):
        acc: dict[str, float] = {}
        floors = []
        for run in normed:
            docs = run.get(qid, [])
            floors.append(min((s for _, s in docs), default=0.0))
            for did, _ in docs:
                acc.setdefault(did, 0.0)
        for run, wr, floor in zip(normed, w, floors):
            got = dict(run.get(qid, []))
            for did in acc:
                acc[did] += wr * got.get(did, floor)
        out[qid] = _ranked(acc, depth)
    return out


def fuse(runs: Sequence[Mapping[str, list[tuple[str, float]]]], method: str = "rrf", *, k: float = 60.0,
         weights: Sequence[float] | None = None, norm: str | Sequence[str] = "minmax",
         depth: int | None = None) -> Run:
    if method == "rrf":
        return rrf(runs, k=k, weights=weights, depth=depth)
    if method == "score":
        return score_fusion(runs, weights=weights, norm=norm, depth=depth)
    raise ConfigError(f"unknown fusion {method!r}; choose from {', '.join(FUSIONS)}")


def _union_qids(runs) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for qid in run:
            seen.setdefault(qid, None)
    return list(seen)
