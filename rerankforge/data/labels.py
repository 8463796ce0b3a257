"""Relevance grades to training targets."""

from __future__ import annotations

import torch


def exp_gain(labels: torch.Tensor) -> torch.Tensor:
    """The nDCG gain 2^rel - 1 (0 for rel <= 0)."""
    return torch.clamp(torch.pow(2.0, labels) - 1.0, min=0.0)


def normalised_gain_targets(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """y_i = (2^rel_i - 1) / sum_j (2^rel_j - 1) over the real candidates of each group.

    Groups without any positive get all-zero targets (the listwise losses skip them)."""
    gain = exp_gain(labels) * mask
    total = gain.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, gain / total.clamp_min(1e-12), torch.zeros_like(gain))


def apply_gain_map(grade: int, gain_map: dict[int, float] | None) -> float:
    """Map a qrels grade through a user gain map (e.g. {1: 1, 2: 3}); unmapped grades pass through."""
    if gain_map and grade in gain_map:
        return float(gain_map[grade])
    return float(grade)
