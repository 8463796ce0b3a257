"""First-stage retrieval and hard-negative mining."""

import importlib
import pkgutil

from rerankforge.mining.base import RETRIEVERS, Retriever, build_retriever, register_retriever

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("base",):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["RETRIEVERS", "Retriever", "build_retriever", "register_retriever"]
