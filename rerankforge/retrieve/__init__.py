"""First-stage retrieval: BM25 (bm25s / rank-bm25), dense (faiss), hybrid, run fusion, corpus streaming.

Retriever modules register themselves on import (``RETRIEVERS``), so ``build_retriever("bm25" |
"dense" | "hybrid" | "module:Class")`` finds them.
"""

from rerankforge.retrieve.base import RETRIEVERS, Retriever, build_retriever, register_retriever
from rerankforge.retrieve import bm25, dense, hybrid  # noqa: F401  (registration)
from rerankforge.retrieve.corpus import CorpusStream
from rerankforge.retrieve.fusion import fuse, normalize_run, normalize_scores, rrf, score_fusion

__all__ = ["RETRIEVERS", "CorpusStream", "Retriever", "build_retriever", "fuse", "normalize_run",
           "normalize_scores", "register_retriever", "rrf", "score_fusion"]
