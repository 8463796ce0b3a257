"""Experiment trackers (tensorboard, wandb, any other accelerate tracker) and the precision check.

    tracking:
      report_to: [tensorboard, wandb]
      project: scifact-rerankers        # wandb project (tensorboard: not used)
      run_name: listwise-lr3e-5         # null: the output_dir's name
      entity: my-team                   # wandb entity (null: your default)
      tags: [minilm, listwise]
      wandb_mode: offline               # null: $WANDB_MODE, else wandb's default (online)

Where the files go: tensorboard event files under ``<output_dir>/tensorboard/<run_name>/``, wandb
runs under ``<output_dir>/wandb/`` (``wandb sync <output_dir>/wandb/offline-run-*`` uploads an
offline run later). Logged: the resolved config as hyperparameters, the training record every
``log_every`` steps (``train/loss``, ``train/lr``, ``train/pairs_per_s``, ``train/epoch``, one
``train/loss/<term>`` per loss term), the evaluation during training (``dev/<measure>``) and the
final evaluation after training (``eval/<split>/<measure>``).

Tensorboard's hparams accept only int, float, str and bool, so the config is flattened to dotted
keys (``optim.lr``) with lists, dicts and None written as JSON text; wandb gets the nested config.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rerankforge.errors import ConfigError


@dataclass
class TrackingConfig:
    #: accelerate trackers: tensorboard, wandb (or mlflow, comet_ml, aim, ... passed to accelerate as is)
    report_to: list[str] = field(default_factory=list)
    #: the wandb project (other trackers that have projects get it too)
    project: str = "rerankforge"
    #: the run's name (null: the output_dir's last component)
    run_name: Optional[str] = None
    #: wandb entity (team or user; null: the account's default)
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    #: wandb run group (e.g. a sweep's name)
    group: Optional[str] = None
    notes: Optional[str] = None
    #: wandb mode: online, offline or disabled (null: $WANDB_MODE, else wandb's default)
    wandb_mode: Optional[str] = None

    def validate(self) -> None:
        if self.wandb_mode not in (None, "online", "offline", "disabled"):
            raise ConfigError(f"wandb_mode must be online, offline or disabled, got {self.wandb_mode!r}")
        known = {"all", "tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab",
                 "trackio"}
        bad = [t for t in self.report_to if str(t) not in known]
        if bad:
            raise ConfigError(f"report_to: unknown tracker {bad[0]!r} (known: {', '.join(sorted(known))})")


def trackers_of(cfg) -> list[str]:
    """``tracking.report_to``, or the top-level ``report_to`` of older configs."""
    return list(cfg.tracking.report_to or cfg.report_to or [])


def run_name_of(cfg) -> str:
    return cfg.tracking.run_name or Path(cfg.output_dir).resolve().name


def build_trackers(cfg) -> list[Any] | None:
    """``log_with`` for the Accelerator: tensorboard and wandb as configured tracker objects (so
    the run name, project, tags and directories come from the config), other names as strings."""
    names = trackers_of(cfg)
    if not names:
        return None
    if "all" in names:
        names = [n for n in ("tensorboard", "wandb") if _importable(n)]
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    t = cfg.tracking
    out: list[Any] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            if not _importable("tensorboard") and not _importable("tensorboardX"):
                raise ConfigError("report_to: tensorboard needs the tensorboard package (pip install tensorboard)")
            out.append(TensorBoardTracker(run_name_of(cfg), Path(cfg.output_dir) / "tensorboard"))
        elif name == "wandb":
            wandb_dir = Path(cfg.output_dir)
            wandb_dir.mkdir(parents=True, exist_ok=True)
            kwargs = {"name": run_name_of(cfg), "dir": str(wandb_dir), "tags": list(t.tags) or None,
                      "entity": t.entity, "group": t.group, "notes": t.notes,
                      "mode": t.wandb_mode or os.environ.get("WANDB_MODE") or None}
            out.append(WandBTracker(t.project, **{k: v for k, v in kwargs.items() if v is not None}))
        else:
            out.append(name)
    return out


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def start_tracking(accelerator, cfg) -> None:
    """Start the trackers and store the resolved config: nested for wandb, flat for the others."""
    if not accelerator.log_with:
        return
    from omegaconf import OmegaConf

    accelerator.init_trackers(cfg.tracking.project)
    nested = OmegaConf.to_container(OmegaConf.structured(cfg))
    flat = flatten_config(nested)
    for tracker in accelerator.trackers:
        tracker.store_init_configuration(nested if tracker.name == "wandb" else flat)


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """``{"optim": {"lr": 1e-3}, "report_to": []}`` -> ``{"optim.lr": 1e-3, "report_to": "[]"}``:
    only int, float, str and bool values (what tensorboard's hparams and mlflow accept)."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:  # None, lists, empty dicts: JSON text keeps them readable and unambiguous
            out[name] = json.dumps(value, default=str)
    return out


def log_metrics(accelerator, metrics: Mapping[str, Any], prefix: str, step: int | None = None) -> None:
    """Numeric ``metrics`` to every tracker as ``<prefix>/<name>``."""
    if accelerator is None or not accelerator.trackers:
        return
    record = {f"{prefix}/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))
              and not isinstance(v, bool)}
    if record:
        accelerator.log(record, step=step)


def training_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The loop's history record as tracker keys: ``loss`` -> ``train/loss`` (``step`` is the x-axis)."""
    return {f"train/{k}": v for k, v in record.items() if k != "step"}


# ------------------------------------------------------------------------------------- precision
def mixed_precision(bf16: bool) -> str:
    """The Accelerator's ``mixed_precision`` for the config's ``bf16``, checked against accelerate's.

    ``accelerate launch`` passes its setting (``--mixed_precision``, else the config file's
    ``mixed_precision``, else ``no``) as ``ACCELERATE_MIXED_PRECISION``; an explicit Accelerator
    argument would silently override it, so a disagreement is an error naming both settings. The
    training config's ``bf16`` picks bf16 or fp32; fp16 and fp8 are not offered (bf16 needs no loss
    scaling and the losses are computed in float32 either way)."""
    ours = "bf16" if bf16 else "no"
    theirs = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if theirs is None or theirs.lower() == ours:
        return ours
    fix = ("`accelerate launch --mixed_precision bf16` (or mixed_precision: bf16 in the accelerate config file), "
           "or set bf16=false" if bf16 else
           "`accelerate launch --mixed_precision no` (or mixed_precision: 'no' in the accelerate config file), "
           "or set bf16=true")
    if theirs.lower() not in ("no", "bf16"):
        fix = (f"rerankforge trains in bf16 (bf16: true) or fp32 (bf16: false), not {theirs}: use "
               "`accelerate launch --mixed_precision bf16` or `--mixed_precision no` and the matching bf16 setting")
    raise ConfigError(f"accelerate's mixed_precision={theirs!r} (ACCELERATE_MIXED_PRECISION, set by `accelerate launch` "
                      f"from --mixed_precision or its config file; 'no' when neither sets it) conflicts with the "
                      f"training config's bf16: {str(bf16).lower()}; {fix}")
