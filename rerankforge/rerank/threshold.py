"""Probability thresholds on reranked runs (meaningful for calibrated models: `rerankforge calibrate`)."""

from __future__ import annotations

from scipy.special import expit

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError


def apply_threshold(run: Run, p: float) -> Run:
    """Drop candidates whose ``sigmoid(score)`` is below ``p`` (meaningful on calibrated logits).
    Queries left without candidates are dropped from the run."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"probability threshold must be in [0, 1], got {p}")
    out: Run = {}
    for qid, docs in run.items():
        kept = [(d, s) for d, s in docs if expit(s) >= p]
        if kept:
            out[qid] = kept
    return out
