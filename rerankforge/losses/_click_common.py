"""Shared pieces of the learned-bias click losses (``two_tower``, ``dla``, ``trust_bias``).

They read per-rank counts from the batch: ``views[B, G, K]`` (how often candidate g was shown at
rank k+1) and ``clicks[B, G, K]``, written by the click-group builder (``with_counts``) from a
log. Aggregating impressions into counts is exact for the position-based likelihoods (a sum of
per-impression Bernoulli terms), and costs one model forward per (query, document), not one per
impression.
"""

from __future__ import annotations

import torch
from torch import nn

from rerankforge.errors import ConfigError


def click_counts(batch) -> tuple[torch.Tensor, torch.Tensor]:
    views, clicks = getattr(batch, "views", None), getattr(batch, "clicks", None)
    if views is None or clicks is None:
        raise ConfigError("this click loss needs groups with per-rank 'views' and 'clicks' per candidate "
                          "(build them with click labels' with_counts, e.g. `rerankforge clicks sweep`)")
    return views, clicks


def check_depth(views: torch.Tensor, num_ranks: int, name: str) -> None:
    if views.shape[-1] > num_ranks:
        raise ConfigError(f"loss {name}: the groups show documents at up to {views.shape[-1]} ranks but the bias "
                          f"tower has num_ranks={num_ranks}; raise num_ranks")


def cell_mask(views: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, G, K]``: (candidate, rank) cells with at least one impression."""
    return mask.bool()[:, :, None] & (views > 0)


def count_inputs(name: str, num_ranks: int, scores: torch.Tensor, clicks: torch.Tensor, mask: torch.Tensor,
                 views: torch.Tensor | None):
    """The checked, float32 inputs of a count-based click loss: ``(scores, views, clicks, cells,
    valid)``, where ``valid[B, G]`` marks candidates shown at least once and scores outside it are 0
    (padding never reaches a sigmoid)."""
    from rerankforge.losses.base import as_float

    if views is None:
        raise ValueError(f"{name} needs per-rank views as well as clicks")
    check_depth(views, num_ranks, name)
    views, clicks = views.to(torch.float32), clicks.to(torch.float32)
    cells = cell_mask(views, mask)
    valid = mask.bool() & cells.any(-1)
    s = as_float(scores)
    return torch.where(valid, s, torch.zeros_like(s)), views, clicks, cells, valid


class RelevanceCalibration(nn.Module):
    """rel = exp(log_scale) * s + offset: the relevance tower's scores as a click logit.

    Ranking-invariant (the scale stays positive), so the exported relevance tower ranks exactly as
    the trained scores do; the offset starts at minus the first batch's mean score so that a model
    with large raw scores (a bi-encoder's cos / 0.05) does not start in sigmoid saturation."""

    def __init__(self, learn_scale: bool = True):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()), requires_grad=bool(learn_scale))
        self.offset = nn.Parameter(torch.zeros(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized) and bool(valid.any()):
            with torch.no_grad():
                self.offset.copy_(-(scores.detach()[valid]).mean() * self.log_scale.exp())
                self.initialized.fill_(True)
        return self.log_scale.exp() * scores + self.offset


def bernoulli_nll(log_p: torch.Tensor, log_1mp: torch.Tensor, views: torch.Tensor, clicks: torch.Tensor,
                  cells: torch.Tensor) -> torch.Tensor:
    """-(C log p + (V - C) log(1 - p)) summed over ``cells`` and divided by the number of impressions
    x ranks (sum V): the mean per-row click log-loss of the batch."""
    zero = torch.zeros_like(log_p)
    terms = clicks * torch.where(cells, log_p, zero) + (views - clicks) * torch.where(cells, log_1mp, zero)
    return -terms.sum() / views.where(cells, torch.zeros_like(views)).sum().clamp_min(1.0)


def log1m_exp(log_p: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Maechler 2012)."""
    x = log_p.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def seen_ranks(seen: torch.Tensor) -> int:
    """How many leading ranks have been trained on (the part of a bias curve worth reporting)."""
    nz = torch.nonzero(seen > 0)
    return int(nz.max()) + 1 if len(nz) else 0
