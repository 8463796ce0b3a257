"""Config -> model, optimizer and schedule."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from rerankforge.errors import ConfigError
from rerankforge.models import MODELS, Reranker
from rerankforge.models.base import resolve_model_path
from rerankforge.train.config import ModelConfig, OptimConfig


def build_model(cfg: ModelConfig) -> Reranker:
    model = MODELS.get(cfg.type).from_base(resolve_model_path(cfg.name_or_path), max_length=cfg.max_length,
                                           **dict(cfg.params))
    if cfg.attention_dropout is not None:
        from rerankforge.models.dropout import set_attention_dropout

        if not set_attention_dropout(model, float(cfg.attention_dropout)):
            raise ConfigError(f"model.attention_dropout: no attention module with a dropout found in {cfg.name_or_path}")
    if cfg.lora:
        from rerankforge.models.peft_utils import apply_lora

        model = apply_lora(model, dict(cfg.lora))
    if cfg.gradient_checkpointing:
        from rerankforge.models.peft_utils import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    return model


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layernorm" in name or "norm.weight" in name


def build_optimizer(model: Reranker, cfg: OptimConfig, loss: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norms; fresh heads may get ``head_lr``.

    Parameters of ``loss`` (learned-bias click losses own a bias tower) join the optimizer in one
    group per loss term, at that term's ``param_lr`` (else ``cfg.lr``) and without weight decay: a
    position-bias logit shrunk towards 0 would be a prior that rank r is examined half the time."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((model.is_head_param(name), _no_decay(name)), []).append(p)
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
    param_groups = [
        {"params": ps, "lr": head_lr if is_head else cfg.lr, "weight_decay": 0.0 if no_decay else cfg.weight_decay}
        for (is_head, no_decay), ps in groups.items()
    ]
    terms = list(getattr(loss, "terms", [loss] if loss is not None else []))
    for term in terms:
        ps = [p for p in term.parameters() if p.requires_grad]
        if ps:
            lr = getattr(term, "param_lr", None)
            param_groups.append({"params": ps, "lr": cfg.lr if lr is None else float(lr), "weight_decay": 0.0})
    return torch.optim.AdamW(param_groups)


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int):
    if cfg.max_minutes is not None:
        from torch.optim.lr_scheduler import LambdaLR

        from rerankforge.train.budget import FittedSchedule

        # Its length may be shortened to what fits the time budget (train/budget.py).
        return LambdaLR(optimizer, FittedSchedule(cfg.schedule, cfg.warmup_ratio, total_steps))
    return get_scheduler(cfg.schedule, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                         num_training_steps=total_steps)
