"""Relevance grades to training targets."""

from __future__ import annotations

import torch


def exp_gain(labels: torch.Tensor) -> torch.Tensor:
    """The nDCG gain 2^rel - 1 (0 for rel <= 0)."""
    return torch.clamp(torch.pow(2.0, labels) - 1.0, min=0.0)


def apply_gain_map(grade: int, gain_map: dict[int, float] | None) -> float:
    """Map a qrels grade through a user gain map (e.g. {1: 1, 2: 3}); unmapped grades pass through."""
    if gain_map and grade in gain_map:
        return float(gain_map[grade])
    return float(grade)


def parse_gain_map(spec: str | dict | None) -> dict[int, float]:
    """``"1:1,2:3"`` or ``{1: 1, 2: 3}`` -> ``{1: 1.0, 2: 3.0}`` (qrels grade -> training label)."""
    from rerankforge.errors import ConfigError

    if spec in (None, "", {}):
        return {}
    items = spec.items() if isinstance(spec, dict) else (
        part.split(":", 1) if ":" in part else (part, None) for part in str(spec).split(",") if part.strip())
    out: dict[int, float] = {}
    for grade, gain in items:
        try:
            out[int(str(grade).strip())] = float(str(gain).strip())
        except (TypeError, ValueError):
            raise ConfigError(f"gain map {spec!r}: expected GRADE:GAIN pairs like '1:1,2:3', got {grade!r}:{gain!r}") from None
    return out
