"""Collapse guard: notice a reranker whose scores have gone constant, in training and at evaluation.

The most common complaint about fine-tuned rerankers is a run that "trains" but ends up scoring
every document the same (too high a learning rate, a saturated head, bf16 overflow). Two signals
tell it apart from slow learning:

* **score spread**: the standard deviation of the scores over the valid candidates of each group,
  averaged over groups; a collapsed model has ~0.
* **loss against its uniform-score value**: the loss the same batch would have if every candidate
  of each group got the group's mean score. That is ln G for listwise softmax CE with one positive
  among G candidates (any constant gives it: the loss is shift invariant), ln 2 for BCE at score 0,
  and in general exactly the loss a collapsed model earns, so "loss ~ uniform value" means the
  scores carry no ranking information. A non-finite loss (a diverged run) also counts.

During training (:class:`CollapseMonitor`, fed every step by the trainer) a logging window is
*collapsed* when its mean spread is below ``min_spread`` and its mean loss is within ``loss_tol``
(relative) of the uniform value, or when any loss in it is non-finite; ``windows`` consecutive
collapsed windows declare the run collapsed: a :class:`CollapseWarning`, a ``collapse`` record in
``train_summary.json`` and, with ``stop_on_collapse``, the end of the loop (the model is still
saved, for inspection). At evaluation, :func:`score_spread` flags a reranked run whose per-query
scores are nearly constant.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rerankforge.errors import ConfigError


class CollapseWarning(UserWarning):
    """A model's scores are (nearly) constant: it no longer ranks."""


@dataclass
class CollapseConfig:
    #: watch every training step's score spread and loss (cheap: one extra loss on [B, G] numbers)
    enabled: bool = True
    #: a window is collapsed when the mean per-group score std is below this ...
    min_spread: float = 1e-3
    #: ... and the loss is within this relative distance of its uniform-score value
    loss_tol: float = 0.02
    #: consecutive collapsed logging windows (of log_every steps) that declare the run collapsed
    windows: int = 3

    def validate(self) -> CollapseConfig:
        if self.min_spread < 0:
            raise ConfigError(f"collapse.min_spread must be >= 0, got {self.min_spread}")
        if self.loss_tol < 0:
            raise ConfigError(f"collapse.loss_tol must be >= 0, got {self.loss_tol}")
        if self.windows < 1:
            raise ConfigError(f"collapse.windows must be >= 1, got {self.windows}")
        return self


def group_spread(scores: torch.Tensor, valid: torch.Tensor) -> tuple[float, int]:
    """(sum over groups of the score std over valid candidates, number of groups with >= 2)."""
    valid = valid.bool() & torch.isfinite(scores)
    n = valid.sum(-1)
    s = torch.where(valid, scores.double(), torch.zeros((), dtype=torch.float64, device=scores.device))
    mean = s.sum(-1) / n.clamp_min(1)
    var = (torch.where(valid, (s - mean[:, None]) ** 2, torch.zeros_like(s))).sum(-1) / n.clamp_min(1)
    rows = n >= 2
    return float(var.sqrt()[rows].sum()), int(rows.sum())


def uniform_scores(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Every valid candidate of a group given the group's mean score (what a collapsed model outputs)."""
    valid = valid.bool() & torch.isfinite(scores)
    s = torch.where(valid, scores, torch.zeros_like(scores))
    mean = s.sum(-1, keepdim=True) / valid.sum(-1, keepdim=True).clamp_min(1)
    return torch.where(valid, mean.expand_as(scores), scores)


class CollapseMonitor:
    """Per-step statistics, summarised per logging window; see the module docstring."""

    def __init__(self, cfg: CollapseConfig, loss, stop: bool = False):
        self.cfg, self.loss, self.stop = cfg, loss, stop
        self.consecutive = 0
        self.collapsed_windows = 0
        self.collapsed_at: int | None = None
        self.stopped_at: int | None = None
        self.diverged = False
        self.last: dict[str, float] = {}
        self._reset()

    def _reset(self) -> None:
        self._spread, self._groups, self._loss, self._uniform, self._steps, self._nonfinite = 0.0, 0, 0.0, 0.0, 0, 0

    @torch.no_grad()
    def observe(self, scores: torch.Tensor, targets, loss: float) -> None:
        """One training step: the model's ``scores[B, G]``, the batch (or in-batch view) and the loss."""
        if not self.cfg.enabled:
            return
        scores = scores.detach().float()
        if not math.isfinite(loss):
            self._nonfinite += 1
            self._steps += 1
            return
        spread, groups = group_spread(scores, targets.mask)
        uniform, _ = self.loss.forward_batch(uniform_scores(scores, targets.mask), targets)
        self._spread += spread
        self._groups += groups
        self._loss += loss
        self._uniform += float(uniform)
        self._steps += 1

    @property
    def should_stop(self) -> bool:
        return self.stop and self.collapsed_at is not None

    def window(self, step: int) -> dict[str, float]:
        """Close the logging window ending at ``step``; returns its fields for the history record."""
        if not self.cfg.enabled or self._steps == 0:
            return {}
        finite = self._steps - self._nonfinite
        spread = self._spread / self._groups if self._groups else float("nan")
        loss = self._loss / finite if finite else float("nan")
        uniform = self._uniform / finite if finite else float("nan")
        nonfinite = self._nonfinite
        if nonfinite:
            collapsed = True
            self.diverged = True
        else:
            near_uniform = abs(loss - uniform) <= self.cfg.loss_tol * max(abs(uniform), 1e-12)
            collapsed = spread < self.cfg.min_spread and near_uniform
        self._reset()
        self.consecutive = self.consecutive + 1 if collapsed else 0
        self.collapsed_windows += int(collapsed)
        self.last = {"score_spread": spread, "uniform_loss": uniform}
        if self.collapsed_at is None and self.consecutive >= self.cfg.windows:
            self.collapsed_at = step
            what = ("the loss is not finite (the run diverged)" if nonfinite else
                    f"score spread {spread:.2e} < {self.cfg.min_spread:g} and loss {loss:.4f} ~ its "
                    f"uniform-score value {uniform:.4f}")
            warnings.warn(f"training collapsed at step {step}: {what} for {self.consecutive} consecutive logging "
                          f"windows; the model scores every candidate alike"
                          + (" (stopping: stop_on_collapse)" if self.stop else
                             " (set stop_on_collapse=true to stop such runs; lower optim.lr)"),
                          CollapseWarning, stacklevel=2)
        return dict(self.last)

    def summary(self) -> dict[str, Any]:
        """The ``collapse`` record of ``train_summary.json``."""
        return {"collapsed": self.collapsed_at is not None, "step": self.collapsed_at, "stopped": self.stopped_at,
                "diverged": self.diverged, "collapsed_windows": self.collapsed_windows,
                "last_score_spread": self.last.get("score_spread"),
                "last_uniform_loss": self.last.get("uniform_loss"), "enabled": self.cfg.enabled,
                "min_spread": self.cfg.min_spread, "loss_tol": self.cfg.loss_tol, "windows": self.cfg.windows}


# --------------------------------------------------------------------------------- evaluation
def score_spread(run: Mapping[str, Sequence[tuple[str, float]]], rtol: float = 1e-3, atol: float = 1e-4,
                 warn: bool = True, what: str = "model") -> dict[str, Any]:
    """How constant a reranked run's scores are, per query.

    A query is *constant* when its scores' std is at most ``atol + rtol * mean |score|``
    (scale-free; bf16 rounding of a constant stays below it). The run is ``nearly_constant``
    when at least half its queries are: the model does not rank, whatever its metrics say
    (ties are then broken by the first stage's order). Warns (:class:`CollapseWarning`) then."""
    stds, constant, n = [], 0, 0
    for docs in run.values():
        scores = [float(s) for _, s in docs if math.isfinite(float(s))]
        if len(scores) < 2:
            continue
        n += 1
        std = statistics.pstdev(scores)
        stds.append(std)
        scale = statistics.fmean(abs(s) for s in scores)
        constant += int(std <= atol + rtol * scale)
    out = {"queries": n, "median_std": statistics.median(stds) if stds else None,
           "constant_queries": constant, "nearly_constant": bool(n) and constant >= 0.5 * n}
    if out["nearly_constant"] and warn:
        warnings.warn(f"{what}: scores are nearly constant on {constant} of {n} queries (median per-query std "
                      f"{out['median_std']:.2e}); it does not rank (a collapsed model?)", CollapseWarning,
                      stacklevel=2)
    return out
