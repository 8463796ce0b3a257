"""Evaluation with ir-measures and reranking of first-stage runs."""

from rerankforge.eval.metrics import DEFAULT_MEASURES, evaluate, per_query
from rerankforge.eval.rerank import RerankStats, rerank

__all__ = ["DEFAULT_MEASURES", "RerankStats", "evaluate", "per_query", "rerank"]
