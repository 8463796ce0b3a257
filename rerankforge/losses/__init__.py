"""Ranking losses, one per file, registered by name (see ``LOSSES``)."""

import importlib
import pkgutil

from rerankforge.losses.base import LOSSES, RankingLoss, WeightedSum, build_loss, register_loss

# Import every sibling module so its @register_loss runs; new loss files need no edit here.
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["LOSSES", "RankingLoss", "WeightedSum", "build_loss", "register_loss"]
