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
from rerankforge.labels.teacher import TeacherScoring
from rerankforge.mining.config import MineConfig
from rerankforge.train.collapse import CollapseConfig


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
    #: a training config whose exported model is name_or_path: trained first when that is missing
    recipe: Optional[str] = None


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
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: collapse guard thresholds (train/collapse.py): constant scores with the loss at its
    #: uniform-score value for several logging windows warn and are recorded in train_summary.json
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    #: end training once the run has collapsed (the model is still saved)
    stop_on_collapse: bool = False
    eval: EvalConfig = field(default_factory=EvalConfig)
    #: checkpoint every N optimizer steps (0: at each epoch end only)
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    #: "auto" resumes from the newest checkpoint in output_dir, or a checkpoint path
    resume: Optional[str] = None
    #: accelerate trackers, e.g. ["wandb"] or ["tensorboard"]
    report_to: list[str] = field(default_factory=list)
    progress: bool = True
    #: write ranks/rank-N.json with the query ids each process trained on and a parameter
    #: checksum (to audit data sharding and replica agreement in multi-process runs)
    record_ranks: bool = False
