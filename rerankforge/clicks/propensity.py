"""Propensity curves on disk: ``rerankforge.propensities/1`` JSON.

    {"schema": "rerankforge.propensities/1", "model": "pbm", "ranks": [1, ..., K],
     "propensity": [1.0, 0.52, ...], "ci_low": [...], "ci_high": [...], "confidence": 0.95, ...}

``propensity[r-1]`` is the examination probability of rank r relative to rank 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.utils.io import write_json

SCHEMA = "rerankforge.propensities/1"


@dataclass
class Propensities:
    values: list[float]
    ci_low: list[float] | None = None
    ci_high: list[float] | None = None
    confidence: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("a propensity curve needs at least one rank")
        for r, v in enumerate(self.values, start=1):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"propensity at rank {r} must be a positive number, got {v!r}")

    def __len__(self) -> int:
        return len(self.values)

    def at(self, rank: int) -> float:
        """Propensity of a 1-based rank; ranks past the curve are an error, not a guess."""
        if rank < 1 or rank > len(self.values):
            raise ConfigError(f"no propensity for rank {rank}: the curve covers ranks 1-{len(self.values)} "
                              f"(estimate it on a log with deeper impressions, or cut impressions with max_rank)")
        return self.values[rank - 1]

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"schema": SCHEMA, **{k: v for k, v in self.meta.items() if k != "schema"}}
        obj["ranks"] = list(range(1, len(self.values) + 1))
        obj["propensity"] = [float(v) for v in self.values]
        if self.ci_low is not None and self.ci_high is not None:
            obj["ci_low"] = [float(v) for v in self.ci_low]
            obj["ci_high"] = [float(v) for v in self.ci_high]
            obj["confidence"] = self.confidence
        return obj

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json())


def load_propensities(path: str | Path) -> Propensities:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"propensity file {path} not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"invalid JSON: {err.msg}") from None
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        raise DataFormatError(path, None, f'expected a JSON object with "schema": "{SCHEMA}"')
    values = obj.get("propensity")
    if not isinstance(values, list):
        raise DataFormatError(path, None, '"propensity" must be a list of numbers')
    meta = {k: v for k, v in obj.items() if k not in ("propensity", "ci_low", "ci_high", "confidence", "ranks")}
    try:
        return Propensities([float(v) for v in values], obj.get("ci_low"), obj.get("ci_high"),
                            obj.get("confidence"), meta)
    except (ConfigError, TypeError, ValueError) as err:
        raise DataFormatError(path, None, str(err)) from None
