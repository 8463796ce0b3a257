"""LoRA (peft) and activation checkpointing for any reranker, plus adapter-aware save/load.

Every reranker keeps its Hugging Face backbone in ``reranker.model`` (cross-encoder: the
sequence-classification model, ColBERT: the encoder, decoder: the causal LM). ``apply_lora`` wraps
that attribute in a ``peft.PeftModel``; anything outside it (e.g. the ColBERT projection) stays
fully trainable. peft is imported lazily: ``rerankforge.models`` imports every module in this
folder, and most runs never touch LoRA.

Config (``model.lora`` in a training config)::

    lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: [query, key, value]}

``alpha``/``dropout`` are short for peft's ``lora_alpha``/``lora_dropout``; any other
``peft.LoraConfig`` field (``use_rslora``, ``modules_to_save``, ``bias``, ...) passes through.
Without ``target_modules`` the attention projections of the backbone are picked (see
``default_target_modules``). A sequence-classification backbone keeps its head (``classifier`` /
``score``) fully trainable: peft adds it to ``modules_to_save`` for ``TaskType.SEQ_CLS``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from rerankforge.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
_ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}
#: attention projections by architecture family, most specific first
_ATTENTION_TARGETS = (
    ("query", "key", "value"),  # BERT, RoBERTa, ELECTRA, XLM-R
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Qwen2, Mistral, Gemma, Phi-3
    ("Wqkv", "Wo"),  # ModernBERT
    ("q_lin", "k_lin", "v_lin"),  # DistilBERT
    ("query_key_value",),  # GPT-NeoX, Falcon
    ("c_attn",),  # GPT-2
)


def is_peft(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is optional at runtime
        return False
    return isinstance(module, PeftModel)


def unwrap_peft(module: nn.Module) -> nn.Module:
    """The plain transformers model under a peft wrapper (LoRA layers still injected)."""
    return module.get_base_model() if is_peft(module) else module


def default_target_modules(model: nn.Module) -> list[str] | str:
    """Attention projections present in ``model``; ``"all-linear"`` for unknown architectures."""
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for family in _ATTENTION_TARGETS:
        found = [n for n in family if n in linear_names]
        if len(found) >= min(len(family), 2):
            return found
    return "all-linear"


def _task_type(hf_model: nn.Module):
    from peft import TaskType

    name = type(hf_model).__name__
    if name.endswith("ForSequenceClassification"):
        return TaskType.SEQ_CLS
    if name.endswith("ForCausalLM"):
        return TaskType.CAUSAL_LM
    return TaskType.FEATURE_EXTRACTION


def lora_config(hf_model: nn.Module, cfg: dict[str, Any]):
    """A ``peft.LoraConfig`` from a rerankforge ``lora`` dict (errors name the bad key)."""
    from peft import LoraConfig

    allowed = {f.name for f in dataclasses.fields(LoraConfig)}
    params: dict[str, Any] = {}
    for key, value in dict(cfg).items():
        name = _ALIASES.get(key, key)
        if name not in allowed or name in ("task_type", "peft_type", "base_model_name_or_path"):
            raise ConfigError(f"model.lora.{key}: not a LoRA option; use r, alpha, dropout, target_modules "
                              f"or another peft.LoraConfig field")
        params[name] = list(value) if isinstance(value, (list, tuple)) else value
    if params.get("target_modules") is None:
        params["target_modules"] = default_target_modules(hf_model)
    if params.get("use_dora"):
        # Merging DoRA needs the magnitude vectors peft re-derives; exports here assume plain LoRA.
        raise ConfigError("model.lora.use_dora: DoRA is not supported by rerankforge's merged export")
    return LoraConfig(task_type=_task_type(hf_model), **params)


def apply_lora(reranker: nn.Module, cfg: dict[str, Any]) -> nn.Module:
    """Wrap ``reranker.model`` in LoRA adapters (base weights frozen); returns ``reranker``."""
    from peft import get_peft_model

    hf_model = getattr(reranker, "model", None)
    if not isinstance(hf_model, nn.Module):
        raise ConfigError(f"{type(reranker).__name__} has no `model` backbone to put LoRA adapters on")
    if is_peft(hf_model):
        raise ConfigError(f"{type(reranker).__name__} already carries LoRA adapters")
    reranker.model = get_peft_model(hf_model, lora_config(hf_model, cfg))
    return reranker


def enable_gradient_checkpointing(reranker: nn.Module) -> nn.Module:
    """Recompute backbone activations in the backward pass (non-reentrant, so frozen LoRA bases work)."""
    hf_model = unwrap_peft(reranker.model)
    kwargs = {"use_reentrant": False}
    if hasattr(hf_model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(hf_model.config, "use_cache", None):
        hf_model.config.use_cache = False  # a KV cache is useless for scoring and clashes with recomputation
    return reranker


def merged_copy(model: nn.Module) -> nn.Module:
    """A plain transformers model with the LoRA deltas folded in; ``model`` itself is untouched.

    Copying costs one extra model in memory, but merging in place and unmerging afterwards would
    round the base weights (badly in bf16) and change the model still being trained."""
    if not is_peft(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def save_backbone(model: nn.Module, path: Path, merge_lora: bool) -> dict[str, Any]:
    """Save a backbone to ``path`` in HF format: merged (plain checkpoint) or as a LoRA adapter.

    Returns what ``rerankforge.json`` must record to load it again."""
    if is_peft(model) and not merge_lora:
        model.save_pretrained(path, safe_serialization=True)
        base = model.peft_config["default"].base_model_name_or_path
        return {"adapter": True, "base_model": str(base)}
    merged_copy(model).save_pretrained(path, safe_serialization=True)
    return {"adapter": False}


def load_backbone(auto_cls, path: Path, meta: dict[str, Any], is_trainable: bool = False, **kwargs) -> nn.Module:
    """Inverse of ``save_backbone``: a plain checkpoint, or base model + adapter from ``path``."""
    if not (path / ADAPTER_CONFIG).exists():
        return auto_cls.from_pretrained(str(path), **kwargs)
    from peft import PeftModel

    base = meta.get("base_model") or json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise FileNotFoundError(f"{path / ADAPTER_CONFIG}: the LoRA adapter does not name its base model")
    if base.startswith(("/", ".")) and not Path(base).exists():
        raise FileNotFoundError(f"{path / ADAPTER_CONFIG}: base model {base} of this LoRA adapter is gone; "
                                f"export with merge_lora=True for a self-contained model")
    model = auto_cls.from_pretrained(str(base), **kwargs)
    return PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
