"""Reranking first-stage runs: scoring, long-document passages, MMR, thresholds, first-stage fusion."""

from rerankforge.rerank.run import RerankStats, rerank

__all__ = ["RerankStats", "rerank"]
