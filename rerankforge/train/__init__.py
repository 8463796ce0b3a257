"""Accelerate training loop, typed configs and checkpointing."""

from rerankforge.train.config import TrainConfig, load_config
from rerankforge.train.loop import train

__all__ = ["TrainConfig", "load_config", "train"]
