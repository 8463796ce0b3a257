"""Evaluation: ir-measures metrics, paired significance tests, the reranking cutoff sweep."""

from rerankforge.eval.metrics import DEFAULT_MEASURES, evaluate, per_query

__all__ = ["DEFAULT_MEASURES", "evaluate", "per_query"]
