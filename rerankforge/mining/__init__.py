"""First-stage retrieval (BM25, dense, hybrid) and hard-negative mining.

Retriever modules register themselves on import; every module here is imported so
``build_retriever("bm25" | "dense" | "hybrid")`` finds them.
"""

import importlib
import pkgutil

from rerankforge.mining.base import RETRIEVERS, Retriever, build_retriever, register_retriever

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base",):
        importlib.import_module(f"{__name__}.{_mod.name}")

from rerankforge.mining.corpus import CorpusStream  # noqa: E402
from rerankforge.mining.fusion import fuse, normalize_run, normalize_scores, rrf, score_fusion  # noqa: E402
from rerankforge.mining.negatives import NegativeMiner, NegativePolicy, mine_groups  # noqa: E402

__all__ = ["RETRIEVERS", "CorpusStream", "NegativeMiner", "NegativePolicy", "Retriever", "build_retriever", "fuse",
           "mine_groups", "normalize_run", "normalize_scores", "register_retriever", "rrf", "score_fusion"]
