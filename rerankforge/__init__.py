"""rerankforge: train, distil and evaluate rerankers for search and RAG.

    from rerankforge import CrossEncoder, Trainer, TrainConfig, evaluate, mine

Names are imported on first use, so ``rerankforge --help`` does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "CrossEncoder": "rerankforge.models.cross_encoder",
    "ColBERT": "rerankforge.models.colbert",
    "DecoderReranker": "rerankforge.models.decoder",
    "BiEncoder": "rerankforge.models.bi_encoder",
    "Reranker": "rerankforge.models.base",
    "load_reranker": "rerankforge.models.base",
    "register_model": "rerankforge.models.base",
    "Trainer": "rerankforge.train.trainer",
    "train": "rerankforge.train.trainer",
    "TrainConfig": "rerankforge.train.config",
    "ModelConfig": "rerankforge.train.config",
    "DataConfig": "rerankforge.train.config",
    "OptimConfig": "rerankforge.train.config",
    "EvalConfig": "rerankforge.train.config",
    "MineConfig": "rerankforge.mining.config",
    "NegativePolicy": "rerankforge.mining.negatives",
    "mine": "rerankforge.api",
    "evaluate": "rerankforge.api",
    "first_stage": "rerankforge.pipelines.steps",
    "adapt": "rerankforge.pipelines.adapt",
    "AdaptConfig": "rerankforge.pipelines.adapt",
    "rerank": "rerankforge.rerank.run",
    "Collection": "rerankforge.data.beir",
    "Group": "rerankforge.data.groups",
    "Candidate": "rerankforge.data.groups",
    "open_groups": "rerankforge.data.groups",
    "read_groups": "rerankforge.data.groups",
    "write_groups": "rerankforge.data.groups",
    "load_groups_dataset": "rerankforge.data.hf",
    "save_groups_dataset": "rerankforge.data.hf",
    "build_loss": "rerankforge.losses.base",
    "register_loss": "rerankforge.losses.base",
    "RankingLoss": "rerankforge.losses.base",
    "load_config": "rerankforge.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        # Importing a submodule runs its package's __init__, which registers the built-in losses/models.
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rerankforge' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
