"""Training: typed configs, the Accelerate loop (``Trainer``), checkpoints, time budgets."""

from rerankforge.train.config import DataConfig, EvalConfig, ModelConfig, OptimConfig, TrainConfig
from rerankforge.train.trainer import Trainer, train

__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "OptimConfig", "TrainConfig", "Trainer", "train"]
