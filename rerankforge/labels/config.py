"""Typed settings of each label job (YAML keys = these field names = the CLI flags with ``_``)
and the factory that turns them into a ``Labeler``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rerankforge.errors import ConfigError
from rerankforge.labels.api import UMBRELA_PROMPT
from rerankforge.labels.llm_local import LISTWISE_PROMPT, POINTWISE_PROMPT


@dataclass
class LabelJobConfig:
    #: input groups JSONL (mined)
    groups: Optional[str] = None
    #: output groups JSONL (written atomically when the job completes)
    out: Optional[str] = None
    #: BEIR collection for candidates stored without text (and for graded qrels)
    collection: Optional[str] = None
    #: queries per batch: the unit of progress that is saved (resume granularity)
    batch_queries: int = 16
    #: ignore saved progress and start over
    restart: bool = False
    progress: bool = True


@dataclass
class GradedConfig(LabelJobConfig):
    #: qrels file (BEIR TSV or TREC); or give collection + split
    qrels: Optional[str] = None
    split: Optional[str] = None
    #: qrels grade -> label, e.g. {1: 1.0, 2: 3.0}; unmapped grades pass through
    gain: dict[int, float] = field(default_factory=dict)
    #: "zero": unjudged candidates get label 0; "none": they are left unlabelled
    unjudged: str = "zero"


@dataclass
class TeacherConfig(LabelJobConfig):
    #: exported rerankforge model directory (any type load_reranker knows)
    model: Optional[str] = None
    batch_size: int = 64
    bf16: bool = True
    #: override the model's max_length (null: the exported one)
    max_length: Optional[int] = None


@dataclass
class LLMConfig(LabelJobConfig):
    #: local Hugging Face causal LM directory
    model: Optional[str] = None
    #: "pointwise" (P(yes)) or "listwise" (sliding-window permutations)
    mode: str = "pointwise"
    bf16: bool = True
    device: str = "auto"
    #: wrap prompts in the tokenizer's chat template
    chat_template: bool = False
    #: prompts / generations per forward pass
    batch_size: int = 8
    # pointwise
    prompt: str = POINTWISE_PROMPT
    yes: str = "yes"
    no: str = "no"
    #: candidate field that receives P(yes): "teacher" or "label"
    field: str = "teacher"
    max_doc_tokens: Optional[int] = 256
    # listwise
    listwise_prompt: str = LISTWISE_PROMPT
    window: int = 20
    step: int = 10
    max_passage_tokens: Optional[int] = 128
    max_new_tokens: Optional[int] = None
    #: rank -> teacher score: "neg_rank" (-rank) or "reciprocal" (1/rank)
    rank_score: str = "neg_rank"
    #: optional increasing rank cutoffs -> graded label, e.g. [1, 3, 10]
    rank_grades: Optional[list[int]] = None


@dataclass
class APIConfig(LabelJobConfig):
    #: OpenAI-compatible base URL (…/v1); default $OPENAI_BASE_URL
    base_url: Optional[str] = None
    #: model name sent to the endpoint; default $OPENAI_MODEL
    model: Optional[str] = None
    #: environment variable holding the API key (keys do not belong in config files)
    api_key_env: str = "OPENAI_API_KEY"
    prompt: str = UMBRELA_PROMPT
    field: str = "label"
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 64
    seed: Optional[int] = None
    max_passage_chars: Optional[int] = 4000
    #: SQLite cache of answered requests (default: <out>.cache.sqlite)
    cache: Optional[str] = None


SCHEMAS: dict[str, type] = {"graded": GradedConfig, "teacher": TeacherConfig, "llm": LLMConfig, "llm-api": APIConfig}


def load_label_config(kind: str, path: str | None, values: dict[str, Any]) -> Any:
    """Schema defaults <- YAML ``path`` <- ``values`` (flags the user gave)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if kind not in SCHEMAS:
        raise ConfigError(f"unknown label job {kind!r}; available: {', '.join(SCHEMAS)}")
    try:
        merged = OmegaConf.structured(SCHEMAS[kind])
        if path is not None:
            if not Path(path).exists():
                raise FileNotFoundError(f"config file {path} not found")
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        merged = OmegaConf.merge(merged, OmegaConf.create(values))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{str(err).splitlines()[0]}" + (f" (key: {key})" if key else "")) from None
    for key in ("groups", "out"):
        if not getattr(cfg, key):
            raise ConfigError(f"label {kind}: --{key} is required (flag or YAML key {key!r})")
    return cfg


def build_labeler(kind: str, cfg: Any):
    """The labeler for ``kind`` and the ``text_of`` lookup (None without a collection)."""
    collection = None
    if cfg.collection:
        from rerankforge.data.beir import Collection

        collection = Collection(cfg.collection)
    text_of = collection.corpus.text if collection is not None else None

    if kind == "graded":
        from rerankforge.labels.graded import GradedLabeler

        if cfg.qrels:
            from rerankforge.data.beir import load_qrels

            qrels, source = load_qrels(cfg.qrels), str(cfg.qrels)
        elif collection is not None and cfg.split:
            qrels, source = collection.qrels(cfg.split), f"{cfg.collection}:{cfg.split}"
        else:
            raise ConfigError("label graded needs --qrels FILE or --collection DIR --split NAME")
        return GradedLabeler(qrels, cfg.gain, cfg.unjudged, source), text_of

    if kind == "teacher":
        from rerankforge.labels.teacher import TeacherLabeler

        if not cfg.model:
            raise ConfigError("label teacher needs --model (an exported rerankforge model directory)")
        return TeacherLabeler(cfg.model, cfg.batch_size, cfg.bf16, cfg.max_length), text_of

    if kind == "llm":
        from rerankforge.labels.llm_local import ListwiseLLMLabeler, LocalLM, PointwiseLLMLabeler

        if not cfg.model:
            raise ConfigError("label llm needs --model (a local Hugging Face causal LM directory)")
        if cfg.mode not in ("pointwise", "listwise"):
            raise ConfigError(f"label llm: mode must be 'pointwise' or 'listwise', got {cfg.mode!r}")
        lm = LocalLM(cfg.model, cfg.bf16, cfg.device, cfg.chat_template)
        if cfg.mode == "pointwise":
            return PointwiseLLMLabeler(lm, cfg.prompt, cfg.yes, cfg.no, cfg.field, cfg.batch_size,
                                       cfg.max_doc_tokens), text_of
        return ListwiseLLMLabeler(lm, cfg.listwise_prompt, cfg.window, cfg.step, cfg.max_passage_tokens,
                                  cfg.max_new_tokens, cfg.batch_size, cfg.rank_score, cfg.rank_grades), text_of

    if kind == "llm-api":
        from rerankforge.labels.api import APILabeler, ChatClient, JudgmentCache

        base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL")
        model = cfg.model or os.environ.get("OPENAI_MODEL")
        if not base_url:
            raise ConfigError("label llm-api needs --base-url (or $OPENAI_BASE_URL)")
        if not model:
            raise ConfigError("label llm-api needs --model (or $OPENAI_MODEL)")
        client = ChatClient(base_url, model, os.environ.get(cfg.api_key_env) if cfg.api_key_env else None,
                            cfg.timeout, cfg.max_retries, cfg.backoff_base, cfg.backoff_max, cfg.temperature,
                            cfg.max_tokens, cfg.seed)
        cache = JudgmentCache(cfg.cache or str(Path(cfg.out).with_name(Path(cfg.out).name + ".cache.sqlite")))
        return APILabeler(client, cache, cfg.prompt, cfg.concurrency, cfg.field, cfg.max_passage_chars), text_of

    raise ConfigError(f"unknown label job {kind!r}")
