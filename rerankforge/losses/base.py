"""The loss contract and registry.

Every loss maps ``(scores[B, G], targets[B, G], mask[B, G], weights[B, G] | None)`` to a scalar.
``target`` names the batch field a loss learns from: ``labels`` (graded relevance) or
``teacher`` (teacher scores). Losses are looked up by name from config, never by if/elif.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from rerankforge.errors import ConfigError
from rerankforge.registry import Registry


class RankingLoss(nn.Module):
    name: str = ""
    target: str = "labels"
    #: a group whose labels have no positive (> 0) contributes nothing to this loss (exactly 0 or
    #: no pair); the trainer skips such groups and refuses data made only of them
    needs_positive: bool = False
    #: learning rate of the loss's own parameters (learned-bias losses own a bias tower); the
    #: trainer gives them an optimizer group of their own. None: optim.lr
    param_lr: float | None = None

    def forward(self, scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward_batch(self, scores: torch.Tensor, batch) -> torch.Tensor:
        """The loss on a :class:`~rerankforge.data.dataset.GroupBatch`; losses that read more than one
        field (the click losses read per-rank ``views`` and ``clicks``) override this."""
        return self(scores, batch.field(self.target), batch.mask, batch.weights)

    def describe(self) -> dict[str, Any] | None:
        """What the loss learned (e.g. a position-bias curve), JSON-ready; None when it learns nothing."""
        return None


LOSSES: Registry[RankingLoss] = Registry("loss", RankingLoss)
register_loss = LOSSES.register


def check_temperature(value: float, name: str = "temperature") -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# Shared conventions (every loss in this folder follows them):
# * A candidate takes part iff ``mask`` is set and its target is finite (teacher scores are NaN
#   where missing). Padded slots may hold any garbage score, NaN included: they are replaced
#   before any arithmetic, so they change nothing and receive exactly zero gradient.
# * ``weights`` (None = all ones) scale terms; means divide by the number of terms, not by the
#   sum of weights, so an inverse-propensity weighted loss stays an unbiased (not self-normalised)
#   estimate of the unweighted one.
# * Reductions: pointwise and pairwise terms are averaged over all candidates / pairs of the
#   batch (as sentence-transformers does), listwise terms over the groups that have a target.
# * A batch with nothing to learn from returns a zero that is still attached to ``scores``, so
#   ``backward()`` works and yields zero gradients.
# ---------------------------------------------------------------------------------------------


def as_float(x: torch.Tensor) -> torch.Tensor:
    """fp32 for half/bf16 inputs (softmaxes and exponentiated gains overflow there); fp64 stays fp64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def valid_targets(targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of usable candidates, targets with unusable entries set to 0)."""
    valid = mask.bool() & torch.isfinite(targets)
    return valid, torch.where(valid, targets, torch.zeros_like(targets))


def clean_scores(scores: torch.Tensor, valid: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Scores with unusable slots set to ``fill`` (no gradient flows to them)."""
    return torch.where(valid, scores, torch.full_like(scores, fill))


def candidate_weights(weights: torch.Tensor | None, valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-candidate weights as ``dtype``, 0 outside ``valid``."""
    if weights is None:
        return valid.to(dtype)
    return torch.where(valid, weights.to(dtype), torch.zeros((), dtype=dtype, device=valid.device))


def prepare(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores with unusable slots set to 0, targets likewise and in the scores' dtype, usable mask)."""
    scores = as_float(scores)
    valid, targets = valid_targets(targets.to(scores.dtype), mask)
    return clean_scores(scores, valid), targets, valid


def masked_log_softmax(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """log softmax over the usable slots of each row; 0 (not -inf) elsewhere, so ``p * logq`` is safe.

    The fill is the dtype's most negative finite number: its softmax weight is exactly 0 and, unlike
    -inf, a row with no usable slot gives finite values and gradients."""
    filled = torch.where(valid, x, torch.full_like(x, torch.finfo(x.dtype).min))
    return torch.where(valid, torch.log_softmax(filled, dim=-1), torch.zeros_like(x))


def weighted_target_distribution(values: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor,
                                 temperature: float) -> torch.Tensor:
    """p_i = w_i exp(v_i / T) / sum_j w_j exp(v_j / T) over usable slots; all-zero rows where sum w = 0.

    No gradient flows through targets; computed with the row max subtracted so exp cannot overflow."""
    with torch.no_grad():
        live = valid & (weights > 0)
        z = torch.where(live, values / temperature, torch.full_like(values, float("-inf")))
        top = z.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        unnorm = torch.where(live, weights * torch.exp(z - top), torch.zeros_like(values))
        return unnorm / unnorm.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)


def check_log(reduction_log: str) -> str:
    if reduction_log not in ("natural", "binary"):
        raise ValueError(f"reduction_log must be 'natural' or 'binary', got {reduction_log!r}")
    return reduction_log


def check_k(k: int | None) -> int | None:
    if k is not None and (int(k) != k or k < 1):
        raise ValueError(f"k must be a positive integer or null, got {k!r}")
    return None if k is None else int(k)


def ordered_pairs(targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[B, G, G]`` bool: (i, j) is a pair iff both are usable and target_i > target_j.

    Every unordered pair of differently-labelled candidates appears once, with the more relevant
    candidate first; ties form no pair."""
    both = valid[:, :, None] & valid[:, None, :]
    return both & (targets[:, :, None] > targets[:, None, :])


def score_ranks(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """0-based rank of each candidate by descending score (unusable slots rank last)."""
    key = torch.where(valid, scores.detach(), torch.full_like(scores, float("-inf")))
    order = key.argsort(dim=-1, descending=True, stable=True)
    return order.argsort(dim=-1)


def mean_over(terms: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Sum of ``terms`` where ``selected``, divided by their count (at least 1).

    Unselected entries are ignored in the value; callers keep them finite so that no NaN can
    leak into the gradient either."""
    picked = torch.where(selected, terms, torch.zeros_like(terms))
    return picked.sum() / selected.sum().clamp_min(1)


class WeightedSum(RankingLoss):
    """sum_k w_k * L_k, each term fed the batch field it asks for."""

    def __init__(self, terms: Sequence[tuple[float, RankingLoss]]):
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList([loss for _, loss in terms])
        # Unique keys for the logged parts: the same loss may appear twice with other params.
        counts: dict[str, int] = {}
        self.part_names = []
        for loss in self.terms:
            name = loss.name or type(loss).__name__
            counts[name] = counts.get(name, 0) + 1
            self.part_names.append(name if counts[name] == 1 else f"{name}#{counts[name]}")
        self._warned: set[str] = set()

        fields = {loss.target for loss in self.terms}
        self.target = fields.pop() if len(fields) == 1 else "mixed"

    @property
    def targets(self) -> list[str]:
        """The batch fields the terms read (e.g. to check that the data has teacher scores)."""
        return sorted({loss.target for loss in self.terms})

    def describe(self) -> dict[str, Any] | None:
        found = {key: d for key, loss in zip(self.part_names, self.terms) if (d := loss.describe()) is not None}
        return found or None

    def forward(self, scores, targets, mask, weights=None):
        """The plain contract, when every term reads the same field; mixed sums need ``forward_batch``."""
        if self.target == "mixed":
            raise TypeError(f"terms read different batch fields ({', '.join(self.targets)}); use forward_batch")
        total = scores.new_zeros((), dtype=as_float(scores).dtype)
        for w, loss in zip(self.weights, self.terms):
            total = total + w * loss(scores, targets, mask, weights)
        return total

    def forward_batch(self, scores: torch.Tensor, batch) -> tuple[torch.Tensor, dict[str, float]]:
        total = scores.new_zeros(())
        parts = {}
        for w, key, loss in zip(self.weights, self.part_names, self.terms):
            targets = batch.field(loss.target)
            if targets is None:
                raise ConfigError(f"loss {key!r} reads batch field {loss.target!r}, which these groups do not carry "
                                  f"(click losses need groups with per-rank views/clicks: clicks groups with counts)")
            if (loss.target not in self._warned and targets.dim() == batch.mask.dim()
                    and not bool((torch.isfinite(targets) & batch.mask).any())):
                # A distillation term on groups without teacher scores would silently contribute 0.
                self._warned.add(loss.target)
                warnings.warn(f"loss {key!r} reads batch field {loss.target!r}, which has no finite value in "
                              f"this batch; the term contributes 0", stacklevel=2)
            value = loss.forward_batch(scores, batch)
            parts[key] = float(value.detach())
            total = total + w * value
        return total, parts


def build_loss(spec: Any) -> WeightedSum:
    """Build from a loss object, a name (registered or ``module:Class``), a mapping
    ``{"name": ..., "weight": ..., **params}`` or a list of any of these.

    Params may also be nested under ``params``. Unknown names or params raise ``ConfigError``
    listing what is accepted."""
    if isinstance(spec, WeightedSum):
        return spec
    # OmegaConf hands over DictConfig/ListConfig, which are Mapping/Sequence but not dict/list.
    specs = [spec] if isinstance(spec, (str, Mapping, RankingLoss)) else list(spec)
    terms = []
    for item in specs:
        if isinstance(item, RankingLoss):
            terms.append((1.0, item))
            continue
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(f"loss spec {item!r} needs a 'name'")
        params = {k: v for k, v in item.items() if k not in ("name", "weight", "params")}
        params.update(item.get("params") or {})
        name = item["name"]
        try:
            weight = float(item.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ConfigError(f"loss {name!r}: weight must be a number, got {item.get('weight')!r}") from None
        if not math.isfinite(weight):
            raise ConfigError(f"loss {name!r}: weight must be finite, got {weight}")
        terms.append((weight, LOSSES.build(name, **params)))
    if not terms:
        raise ConfigError("no loss configured")
    return WeightedSum(terms)
