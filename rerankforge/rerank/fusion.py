"""Fusing a reranker with its first stage: α·norm(first) + (1 − α)·norm(rerank), per query.

One weighted score fusion (``retrieve.fusion.score_fusion``) over the documents the reranker
scored. α is a model-selection choice: pick it on training or development queries
(``choose_alpha``), never on the queries you report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rerankforge.data.trec import Run
from rerankforge.retrieve.fusion import score_fusion

__all__ = ["choose_alpha", "fuse_with_first_stage"]


def fuse_with_first_stage(first: Run, reranked: Run, alpha: float, norm: str = "minmax") -> Run:
    """Score fusion of ``first`` and ``reranked`` over the documents the reranker scored
    (documents the first stage lacks get its lowest normalised score)."""
    scored = {q: {d for d, _ in docs} for q, docs in reranked.items()}
    head = {q: [(d, s) for d, s in first.get(q, []) if d in scored[q]] for q in reranked}
    return score_fusion([head, reranked], weights=[alpha, 1.0 - alpha], norm=norm)


def choose_alpha(first: Run, reranked: Run, objective: Callable[[Run], float],
                 grid: Sequence[float] = tuple(np.round(np.linspace(0, 1, 21), 2)),
                 norm: str = "minmax") -> tuple[float, dict[float, float]]:
    """Grid-search α maximising ``objective`` (e.g. nDCG@10 on held-out training queries)."""
    curve = {float(a): objective(fuse_with_first_stage(first, reranked, float(a), norm)) for a in grid}
    best = max(curve, key=lambda a: (curve[a], -a))  # ties: prefer more reranker weight
    return best, curve
