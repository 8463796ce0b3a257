"""Training to a wall-clock budget (``optim.max_minutes``).

A fixed number of steps is the wrong unit when the hardware is unknown in advance (a lent GPU
for ten minutes, a CI box): too few wastes the slot, too many never finishes the schedule. With a
budget, the loop times a few steps after a short warm-up, then fits the schedule to the steps
that fit into what is left, so warm-up and decay still run their full course. If steps later turn
slower than measured, the run stops at the budget anyway (the model is still saved).

The schedule is a small callable object rather than a closure: ``LambdaLR`` saves such an object's
attributes in its state dict, so a resumed run keeps the fitted length.
"""

from __future__ import annotations

import math
import time

from rerankforge.errors import ConfigError

SHAPES = ("linear", "cosine", "constant", "constant_with_warmup")


class FittedSchedule:
    """Learning-rate multiplier: linear warm-up over ``warmup_ratio * total`` steps, then the
    decay ``shape`` down to the end of ``total`` steps (the same curves as transformers'
    ``get_scheduler``); ``total`` may be shortened during training."""

    def __init__(self, shape: str, warmup_ratio: float, total: int):
        if shape not in SHAPES:
            raise ConfigError(f"optim.max_minutes supports schedules {', '.join(SHAPES)}; got {shape!r}")
        self.shape, self.warmup_ratio, self.total = shape, float(warmup_ratio), int(total)

    def __call__(self, step: int) -> float:
        warmup = int(self.warmup_ratio * self.total) if self.shape != "constant" else 0
        if step < warmup:
            return step / max(1, warmup)
        if self.shape.startswith("constant"):
            return 1.0
        progress = (step - warmup) / max(1, self.total - warmup)
        if self.shape == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class TimeBudget:
    """Decides how many optimizer steps fit into ``minutes`` of training.

    The first ``skip_steps`` steps (kernel selection, allocator growth, loader start-up) are not
    timed; the next ``probe_steps`` give the step time. ``margin`` keeps a little time back for
    epoch ends (checkpoints, loader restarts)."""

    def __init__(self, minutes: float, start: float | None = None, skip_steps: int = 5, probe_steps: int = 20,
                 margin: float = 0.03):
        if minutes <= 0:
            raise ConfigError(f"optim.max_minutes must be > 0, got {minutes}")
        self.seconds = 60.0 * minutes
        self.start = time.perf_counter() if start is None else start
        self.skip_steps, self.probe_steps, self.margin = skip_steps, probe_steps, margin
        self._probe_start: float | None = None
        self.step_seconds: float | None = None

    def observe(self, step: int, now: float) -> int | None:
        """Call after each optimizer step, ``step`` counting this run's steps from 1; returns how
        many steps fit in all (this run's, including ``step``) once the step time is known
        (once), else None."""
        if self.step_seconds is not None:
            return None
        if step == self.skip_steps:
            self._probe_start = now
        elif self._probe_start is not None and step == self.skip_steps + self.probe_steps:
            self.step_seconds = (now - self._probe_start) / self.probe_steps
            left = self.seconds * (1.0 - self.margin) - (now - self.start)
            return step + max(1, int(left / self.step_seconds))
        return None

    def expired(self, now: float) -> bool:
        return now - self.start >= self.seconds
