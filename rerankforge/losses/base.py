"""The loss contract and registry.

Every loss maps ``(scores[B, G], targets[B, G], mask[B, G], weights[B, G] | None)`` to a scalar.
``target`` names the batch field a loss learns from: ``labels`` (graded relevance) or
``teacher`` (teacher scores). Losses are looked up by name from config, never by if/elif.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rerankforge.errors import ConfigError

LOSSES: dict[str, type[RankingLoss]] = {}

NEG_INF = -1e4  # finite stand-in for -inf in bf16/fp32 softmaxes over padded slots


def register_loss(name: str):
    def wrap(cls):
        if name in LOSSES:
            raise ValueError(f"loss {name!r} registered twice")
        cls.name = name
        LOSSES[name] = cls
        return cls

    return wrap


class RankingLoss(nn.Module):
    name: str = ""
    target: str = "labels"

    def forward(self, scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def masked_scores(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~mask, NEG_INF)


class WeightedSum(RankingLoss):
    """sum_k w_k * L_k, each term fed the batch field it asks for."""

    def __init__(self, terms: Sequence[tuple[float, RankingLoss]]):
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList([loss for _, loss in terms])

    def forward_batch(self, scores: torch.Tensor, batch) -> tuple[torch.Tensor, dict[str, float]]:
        total = scores.new_zeros(())
        parts = {}
        for w, loss in zip(self.weights, self.terms):
            value = loss(scores, batch.field(loss.target), batch.mask, batch.weights)
            parts[loss.name] = float(value.detach())
            total = total + w * value
        return total, parts


def build_loss(spec: Any) -> WeightedSum:
    """Build from a name, ``{"name": ..., "weight": ..., **params}`` or a list of either."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    terms = []
    for item in specs:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(f"loss spec {item!r} needs a 'name'")
        params = {k: v for k, v in item.items() if k not in ("name", "weight", "params")}
        params.update(item.get("params") or {})
        name = item["name"]
        if name not in LOSSES:
            raise ConfigError(f"unknown loss {name!r}; available: {', '.join(sorted(LOSSES))}")
        try:
            terms.append((float(item.get("weight", 1.0)), LOSSES[name](**params)))
        except TypeError as err:
            raise ConfigError(f"loss {name!r}: {err}") from None
    if not terms:
        raise ConfigError("no loss configured")
    return WeightedSum(terms)
