"""Rerankers behind one contract: a batch of groups in, ``scores[B, G]`` out."""

import importlib
import pkgutil

from rerankforge.models.base import MODELS, Reranker, default_base_model, load_reranker, register_model

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["MODELS", "Reranker", "default_base_model", "load_reranker", "register_model"]
