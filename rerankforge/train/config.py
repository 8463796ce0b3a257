"""Typed training configuration (loaded by ``rerankforge.config.load_config``).

    cfg = load_config(TrainConfig, "configs/scifact_listwise.yaml", ["optim.lr=2e-5"])

A recipe may declare its data pipeline under ``data.mine`` (a :class:`MineConfig`): the groups are
mined before training and cached by a fingerprint of the inputs and options, so a recipe runs
from a fresh clone with ``rerankforge train --config FILE`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rerankforge.config import to_yaml  # noqa: F401  (re-exported for callers)
from rerankforge.errors import ConfigError
from rerankforge.export.card import CardConfig
from rerankforge.labels.teacher import TeacherScoring
from rerankforge.mining.config import MineConfig
from rerankforge.train.collapse import CollapseConfig
from rerankforge.train.tracking import TrackingConfig

#: ``optim.schedule`` values: transformers' ``get_scheduler`` names that need no extra arguments
SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
             "inverse_sqrt")


def _at_least(obj, section: str, minimum: int, *keys: str, optional: bool = False) -> None:
    """Each of ``keys`` is an int >= ``minimum``; with ``optional`` None is allowed (it means
    "unset"); an explicit 0 never does."""
    for key in keys:
        value = getattr(obj, key)
        if value is None and optional:
            continue
        if value is None or isinstance(value, bool) or value < minimum:
            unset = " (or null)" if optional else ""
            raise ConfigError(f"{section + '.' if section else ''}{key} must be >= {minimum}{unset}, got {value!r}")


def _positive(obj, section: str, *keys: str, optional: bool = False) -> None:
    import math

    for key in keys:
        value = getattr(obj, key)
        if value is None and optional:
            continue
        if value is None or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{section}.{key} must be > 0, got {value!r}")


@dataclass
class ModelConfig:
    type: str = "cross_encoder"
    #: HF checkpoint dir or hub name; "default" is the bundled MiniLM-L6
    name_or_path: str = "default"
    max_length: int = 256
    #: extra constructor arguments for the model type (e.g. ColBERT ``dim``)
    params: dict[str, Any] = field(default_factory=dict)
    #: peft LoRA settings (r, alpha, dropout, target_modules); null trains all weights
    lora: Optional[dict[str, Any]] = None
    gradient_checkpointing: bool = False
    #: attention-probability dropout while training (null: the checkpoint's, 0.1 for BERT). 0 keeps
    #: PyTorch's fused attention kernel on CPU: ~1.6x faster training steps for MiniLM-L6 there
    attention_dropout: Optional[float] = None
    #: on CPU, draw dropout masks from PCG64 and run attention with dropout through a leaner path
    #: (rerankforge/models/fast_dropout.py): same rates, 2.2-2.6x faster MiniLM-L6 steps at 256 tokens (bench/bench_speed_train_amx.json)
    fast_dropout: bool = True
    #: a training config whose exported model is name_or_path: trained first when that is missing
    recipe: Optional[str] = None

    def validate(self) -> None:
        _at_least(self, "model", 1, "max_length")
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"model.attention_dropout must be in [0, 1), got {self.attention_dropout!r}")


@dataclass
class DataConfig:
    #: groups written by `rerankforge mine` / `label` / `clicks groups`: a JSONL file or a saved
    #: Hugging Face dataset directory (or declare `mine` instead)
    train_groups: Optional[str] = None
    #: mine the training groups first (cached by a fingerprint of inputs and options)
    mine: Optional[MineConfig] = None
    #: where mined groups are cached (null: $RERANKFORGE_CACHE/groups or ~/.cache/rerankforge/groups)
    cache_dir: Optional[str] = None
    #: a teacher model directory: its scores are added to every candidate before training (the
    #: resumable ``teacher`` label job; reused while the groups and the teacher are unchanged)
    teacher: Optional[str] = None
    #: a training config that exports ``teacher``: trained first when the teacher is missing
    teacher_recipe: Optional[str] = None
    teacher_scoring: TeacherScoring = field(default_factory=TeacherScoring)
    #: BEIR collection used to look up texts for candidates stored without text
    collection: Optional[str] = None
    #: candidates per group drawn each epoch from the mined pool (null: all)
    group_size: Optional[int] = 16
    max_positives: Optional[int] = None
    #: use only the first N groups (quick experiments)
    max_groups: Optional[int] = None
    num_workers: int = 0

    def validate(self) -> None:
        # One candidate per group is one negative and no positive: every listwise/pairwise loss is 0.
        _at_least(self, "data", 2, "group_size", optional=True)
        _at_least(self, "data", 1, "max_positives", "max_groups", optional=True)
        _at_least(self, "data", 0, "num_workers")


@dataclass
class OptimConfig:
    lr: float = 3e-5
    #: learning rate of freshly initialised heads (null: same as lr)
    head_lr: Optional[float] = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    epochs: int = 1
    #: stop after this many optimizer steps (overrides epochs when set)
    max_steps: Optional[int] = None
    #: wall-clock budget for the training loop: the step time is measured after a few steps and
    #: the schedule is fitted to the steps that fit (never more than epochs/max_steps give);
    #: see train/budget.py. Schedules: linear, cosine, constant, constant_with_warmup
    max_minutes: Optional[float] = None
    #: groups per forward pass on each process
    batch_size: int = 2
    grad_accum: int = 1
    max_grad_norm: float = 1.0

    def validate(self) -> None:
        # AdamW checks lr only when given as its own argument; we set it per parameter group, so
        # a negative lr would silently train by gradient ascent.
        _positive(self, "optim", "lr")
        _positive(self, "optim", "head_lr", "max_minutes", optional=True)
        _at_least(self, "optim", 1, "epochs", "batch_size", "grad_accum")
        _at_least(self, "optim", 1, "max_steps", optional=True)
        if not 0.0 <= self.weight_decay:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1], got {self.warmup_ratio!r}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"optim.max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule {self.schedule!r} is unknown; choose from {', '.join(SCHEDULES)}")
        if self.max_minutes is not None:
            from rerankforge.train.budget import SHAPES

            if self.schedule not in SHAPES:
                raise ConfigError(f"optim.max_minutes supports schedules {', '.join(SHAPES)}; got {self.schedule!r}")


@dataclass
class EvalConfig:
    #: BEIR collection to evaluate on after training (null: no evaluation)
    collection: Optional[str] = None
    split: str = "test"
    #: first-stage TREC run to rerank (null: BM25 top-depth retrieved on the fly)
    run: Optional[str] = None
    depth: int = 100
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "RR@10", "R@100", "AP@100"])
    batch_size: int = 64
    #: evaluate on the first N judged queries only (quick runs)
    max_queries: Optional[int] = None
    #: also report the reranker fused with the first stage, alpha*norm(first) + (1-alpha)*norm(rerank),
    #: alpha chosen on the dev queries of the dev: section (a dev split or held-out train queries),
    #: never on the queries evaluated here; eval.json gets "fused" and "fusion"
    fusion: bool = False
    fusion_norm: str = "zscore"

    def validate(self) -> None:
        _at_least(self, "eval", 1, "depth", "batch_size")
        _at_least(self, "eval", 1, "max_queries", optional=True)
        if self.fusion_norm not in ("minmax", "zscore"):
            raise ConfigError(f"eval.fusion_norm must be minmax or zscore, got {self.fusion_norm!r}")


@dataclass
class DevEvalConfig:
    """Evaluation during training, on queries that are not test queries: a judged dev split, or
    the train queries that ``data.mine.holdout_queries`` kept out of the training groups."""

    #: evaluate every N optimizer steps and at the end of training (0: off)
    every: int = 0
    #: BEIR collection (null: data.collection, else data.mine.collection)
    collection: Optional[str] = None
    #: a judged split other than the test split (dev, or train with holdout: true)
    split: str = "dev"
    #: evaluate on the queries held out from mining (data.mine.holdout_queries of data.mine.split)
    holdout: bool = False
    #: first-stage TREC run to rerank (null: BM25 top-depth, retrieved once before training)
    run: Optional[str] = None
    depth: int = 30
    #: the measure that picks the best checkpoint; measures are logged as dev/<measure>
    metric: str = "nDCG@10"
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "RR@10"])
    max_queries: Optional[int] = 50
    batch_size: int = 64
    #: keep the best model so far (by metric) in <output_dir>/best
    keep_best: bool = True
    #: export the best model (not the last) as <output_dir>/model
    export_best: bool = False
    #: also evaluate the starting model (step 0), so that with export_best a run that only makes
    #: the model worse on dev exports its start instead
    at_start: bool = False

    def validate(self) -> None:
        from rerankforge.errors import ConfigError

        if self.every < 0:
            raise ConfigError(f"every must be >= 0 (0: off), got {self.every}")
        if self.split == "test" and not self.holdout:
            raise ConfigError("split: test: evaluation during training picks checkpoints, so it must not see test "
                              "judgments; use a dev split or split: train with holdout: true")
        if self.metric not in self.measures:
            self.measures = [self.metric, *self.measures]
        if self.export_best and not self.keep_best:
            raise ConfigError("export_best needs keep_best: true")


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 42
    bf16: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: list of {name, weight, ...params}; see rerankforge.losses.LOSSES
    loss: list[Any] = field(default_factory=lambda: [{"name": "listwise_ce"}])
    #: also score each query against the other queries' documents of the batch, gathered across
    #: processes (late-interaction models, e.g. colbert)
    in_batch_negatives: bool = False
    #: leave another query's document out of a row when it is one of that row's own candidates or a
    #: judged positive of its mined group (false in-batch negatives; train/in_batch.py)
    in_batch_mask_positives: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: collapse guard thresholds (train/collapse.py): constant scores with the loss at its
    #: uniform-score value for several logging windows warn and are recorded in train_summary.json
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    #: end training once the run has collapsed (the model is still saved)
    stop_on_collapse: bool = False
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: evaluation during training (dev split or held-out train queries) and the best checkpoint
    dev: DevEvalConfig = field(default_factory=DevEvalConfig)
    #: experiment trackers: report_to, project, run_name, entity, tags (rerankforge/train/tracking.py)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    #: model card facts (license, datasets, tags) and push_to_hub (rerankforge/export/card.py)
    card: CardConfig = field(default_factory=CardConfig)
    #: checkpoint every N optimizer steps (0: at each epoch end only)
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    #: "auto" resumes from the newest checkpoint in output_dir, or a checkpoint path
    resume: Optional[str] = None
    #: accelerate trackers, e.g. ["wandb"] or ["tensorboard"] (same as tracking.report_to, kept for older configs)
    report_to: list[str] = field(default_factory=list)
    progress: bool = True
    #: write ranks/rank-N.json with the query ids each process trained on and a parameter
    #: checksum (to audit data sharding and replica agreement in multi-process runs)
    record_ranks: bool = False

    def validate(self) -> None:
        _at_least(self, "", 0, "save_every", "keep_checkpoints")
        _at_least(self, "", 1, "log_every")
        if self.eval.fusion:
            mine = self.data.mine
            if not self.eval.collection:
                raise ConfigError("eval.fusion: true needs eval.collection")
            if self.dev.holdout and not (mine and mine.holdout_queries):
                raise ConfigError("eval.fusion with dev.holdout: true needs data.mine.holdout_queries > 0")
            if not (self.dev.collection or self.data.collection or (mine and mine.collection)):
                raise ConfigError("eval.fusion: true chooses alpha on dev queries: set dev.collection and dev.split "
                                  "(a judged split that is not the test split) or dev.holdout: true")
        if not self.loss:
            raise ConfigError("loss: give at least one loss, e.g. [{name: listwise_ce}]")
