"""Fusing a reranker with its first stage: α·norm(first) + (1 − α)·norm(rerank), per query.

α is a model-selection choice: pick it on training or development queries (``choose_alpha``),
never on the queries you report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rerankforge.data.trec import Run
from rerankforge.mining.fusion import normalize_scores as normalize
from rerankforge.mining.fusion import rrf

__all__ = ["choose_alpha", "fuse", "normalize", "reciprocal_rank_fusion"]


def fuse(first: Run, reranked: Run, alpha: float, norm: str = "minmax") -> Run:
    """Score fusion over the documents the reranker scored; documents missing from ``first``
    get that query's lowest first-stage score."""
    out: Run = {}
    for qid, docs in reranked.items():
        ids = [d for d, _ in docs]
        first_scores = dict(first.get(qid, []))
        floor = min(first_scores.values()) if first_scores else 0.0
        f = normalize(np.array([first_scores.get(d, floor) for d in ids]), norm)
        r = normalize(np.array([s for _, s in docs]), norm)
        fused = alpha * f + (1.0 - alpha) * r
        out[qid] = sorted(zip(ids, fused.tolist()), key=lambda e: -e[1])
    return out


def choose_alpha(first: Run, reranked: Run, objective: Callable[[Run], float],
                 grid: Sequence[float] = tuple(np.round(np.linspace(0, 1, 21), 2)),
                 norm: str = "minmax") -> tuple[float, dict[float, float]]:
    """Grid-search α maximising ``objective`` (e.g. nDCG@10 on held-out training queries)."""
    curve = {float(a): objective(fuse(first, reranked, float(a), norm)) for a in grid}
    best = max(curve, key=lambda a: (curve[a], -a))  # ties: prefer more reranker weight
    return best, curve


def reciprocal_rank_fusion(runs: Sequence[Mapping[str, list[tuple[str, float]]]], k: int = 60,
                           depth: int | None = None) -> Run:
    """RRF (Cormack et al., SIGIR 2009) of several runs: score(d) = Σ_runs 1 / (k + rank(d))."""
    return rrf(runs, k=k, depth=depth)
