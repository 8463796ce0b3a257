"""In-batch negatives: each query is also scored against every other query's documents.

The model returns ``scores[B, N_total]`` over all documents of the (cross-process) batch plus
where each query's own candidates sit; this view spreads the ``[B, G]`` targets over those
columns so every loss runs unchanged: other queries' documents count as non-relevant (label 0,
weight 1) and have no teacher score (NaN, so distillation terms ignore them).
"""

from __future__ import annotations

import inspect

import torch

from rerankforge.errors import ConfigError


def supports_in_batch(model) -> bool:
    return "in_batch" in inspect.signature(model.forward).parameters


class InBatchView:
    def __init__(self, out, batch):
        self._out = out
        self.mask = out.mask()
        self.labels = out.expand(batch.labels, 0.0)
        self.teacher = out.expand(batch.teacher, float("nan"))
        self.weights = out.expand(batch.weights, 1.0)
        self.first_stage = out.expand(batch.first_stage, float("nan"))
        self.query_ids = batch.query_ids
        # Per-rank click counts do not spread over other queries' documents: click losses refuse them.
        self.views = self.clicks = None

    def field(self, name: str) -> torch.Tensor:
        return getattr(self, name)


def check_in_batch(model) -> None:
    if not supports_in_batch(model):
        raise ConfigError(f"{type(model).__name__} cannot score in-batch negatives (in_batch_negatives=true); "
                          "it is available for colbert and bi_encoder")
