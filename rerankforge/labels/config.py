"""Typed settings of each label job (YAML keys = these field names; flags declared on the fields)
and the registry of label jobs (``LABEL_JOBS``): ``rerankforge label KIND`` for every registered
kind, each turning its config into a :class:`~rerankforge.labels.job.Labeler`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rerankforge.config import option, require
from rerankforge.data.labels import parse_gain_map
from rerankforge.errors import ConfigError
from rerankforge.registry import Registry
from rerankforge.labels.api import UMBRELA_PROMPT
from rerankforge.labels.llm_local import LISTWISE_PROMPT, POINTWISE_PROMPT


def comma_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


@dataclass
class LabelJobConfig:
    groups: Optional[str] = option(None, flag="--groups", help="input groups JSONL")
    out: Optional[str] = option(None, flag="--out", help="output groups JSONL (written atomically at the end)")
    collection: Optional[str] = option(None, flag="--collection",
                                       help="BEIR collection for candidates stored without text")
    #: queries per batch: the unit of progress that is saved (resume granularity)
    batch_queries: int = option(16, flag="--batch-queries", help="queries per batch; progress is saved after each")
    restart: bool = option(False, flag="--restart", help="discard saved progress and start over")
    progress: bool = option(True, flag="--no-progress", help="no progress bar")

    def validate(self) -> None:
        require(self, "groups", "out")
        if self.batch_queries < 1:
            raise ConfigError(f"batch_queries must be >= 1, got {self.batch_queries}")


@dataclass
class GradedConfig(LabelJobConfig):
    qrels: Optional[str] = option(None, flag="--qrels", help="qrels file (BEIR TSV or TREC); or --collection + --split")
    split: Optional[str] = option(None, flag="--split", help="qrels split of --collection")
    #: qrels grade -> label, e.g. {1: 1.0, 2: 3.0}; unmapped grades pass through
    gain: dict[int, float] = option(factory=dict, flag="--gain", parse=parse_gain_map,
                                    help="grade:gain map, e.g. '1:1,2:3' (unmapped grades pass through)")
    unjudged: str = option("zero", flag="--unjudged", choices=("zero", "none"),
                           help="label of candidates without a judgment: 0 or none (unlabelled)")


@dataclass
class TeacherConfig(LabelJobConfig):
    model: Optional[str] = option(None, flag="--model", help="exported model directory")
    batch_size: int = option(64, flag="--batch-size", help="pairs per forward pass")
    bf16: bool = option(True, flag="--no-bf16", help="score in float32")
    max_length: Optional[int] = option(None, flag="--max-length", help="override the model's max length")


@dataclass
class LLMConfig(LabelJobConfig):
    model: Optional[str] = option(None, flag="--model", help="local Hugging Face causal LM directory")
    mode: str = option("pointwise", flag="--mode", choices=("pointwise", "listwise"))
    bf16: bool = option(True, flag="--no-bf16", help="float32")
    device: str = option("auto", flag="--device", help="auto, cpu, cuda, cuda:1 ...")
    #: wrap prompts in the tokenizer's chat template
    chat_template: bool = option(False, flag="--chat-template", help="wrap prompts in the chat template")
    batch_size: int = option(8, flag="--batch-size", help="prompts / generations per forward pass")
    # pointwise
    prompt: str = option(POINTWISE_PROMPT, flag="--prompt", help="pointwise prompt with {query} and {document}")
    yes: str = "yes"
    no: str = "no"
    field: str = option("teacher", flag="--field", choices=("teacher", "label"), help="field receiving P(yes)")
    max_doc_tokens: Optional[int] = 256
    # listwise
    listwise_prompt: str = option(LISTWISE_PROMPT, flag="--listwise-prompt",
                                  help="listwise prompt with {query}, {passages} and {num}")
    window: int = option(20, flag="--window", help="listwise window size")
    step: int = option(10, flag="--step", help="listwise window step")
    max_passage_tokens: Optional[int] = 128
    max_new_tokens: Optional[int] = None
    rank_score: str = option("neg_rank", flag="--rank-score", choices=("neg_rank", "reciprocal"),
                             help="teacher target from the final rank (neg_rank: -rank)")
    rank_grades: Optional[list[int]] = option(None, flag="--rank-grades", parse=comma_ints,
                                              help="rank cutoffs for graded labels, e.g. 1,3,10 -> grades 3,2,1,0")


@dataclass
class APIConfig(LabelJobConfig):
    base_url: Optional[str] = option(None, flag="--base-url", help="e.g. http://localhost:8000/v1 ($OPENAI_BASE_URL)")
    model: Optional[str] = option(None, flag="--model", help="model name at the endpoint ($OPENAI_MODEL)")
    #: environment variable holding the API key (keys do not belong in config files)
    api_key_env: str = option("OPENAI_API_KEY", flag="--api-key-env", help="env variable with the key")
    prompt: str = UMBRELA_PROMPT
    field: str = option("label", flag="--field", choices=("teacher", "label"), help="field receiving the grade")
    concurrency: int = option(8, flag="--concurrency", help="requests in flight")
    timeout: float = option(60.0, flag="--timeout", help="seconds per request")
    max_retries: int = option(5, flag="--max-retries", help="retries per request")
    #: stop the job after this many connection failures / timeouts in a row (any 401/403 stops at once)
    max_consecutive_failures: int = option(5, flag="--max-consecutive-failures",
                                           help="stop after N connection failures or timeouts in a row")
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    temperature: float = 0.0
    max_tokens: int = 64
    seed: Optional[int] = None
    max_passage_chars: Optional[int] = 4000
    cache: Optional[str] = option(None, flag="--cache", help="SQLite cache of answers (default OUT.cache.sqlite)")

    def validate(self) -> None:
        super().validate()
        for key in ("concurrency", "max_consecutive_failures"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout}")


class LabelJob:
    """A kind of label job: its settings (``config``) and how they become a Labeler."""

    config: type[LabelJobConfig] = LabelJobConfig
    help: str = ""
    name: str = ""

    @staticmethod
    def build(cfg, collection):
        raise NotImplementedError


LABEL_JOBS: Registry[LabelJob] = Registry("label job", LabelJob)


@LABEL_JOBS.register("graded")
class GradedJob(LabelJob):
    config = GradedConfig
    help = "labels from qrels through a gain map"

    @staticmethod
    def build(cfg, collection):
        from rerankforge.labels.graded import GradedLabeler

        if cfg.qrels:
            from rerankforge.data.beir import load_qrels

            qrels, source = load_qrels(cfg.qrels), str(cfg.qrels)
        elif collection is not None and cfg.split:
            qrels, source = collection.qrels(cfg.split), f"{cfg.collection}:{cfg.split}"
        else:
            raise ConfigError("label graded needs --qrels FILE or --collection DIR --split NAME")
        return GradedLabeler(qrels, cfg.gain, cfg.unjudged, source)


@LABEL_JOBS.register("teacher")
class TeacherJob(LabelJob):
    config = TeacherConfig
    help = "teacher scores from any exported rerankforge model"

    @staticmethod
    def build(cfg, collection):
        from rerankforge.labels.teacher import TeacherLabeler

        if not cfg.model:
            raise ConfigError("label teacher needs --model (an exported rerankforge model directory)")
        return TeacherLabeler(cfg.model, cfg.batch_size, cfg.bf16, cfg.max_length)


@LABEL_JOBS.register("llm")
class LLMJob(LabelJob):
    config = LLMConfig
    help = "local causal LM: pointwise P(yes) or listwise sliding-window permutations"

    @staticmethod
    def build(cfg, collection):
        from rerankforge.labels.llm_local import ListwiseLLMLabeler, LocalLM, PointwiseLLMLabeler

        if not cfg.model:
            raise ConfigError("label llm needs --model (a local Hugging Face causal LM directory)")
        lm = LocalLM(cfg.model, cfg.bf16, cfg.device, cfg.chat_template)
        if cfg.mode == "pointwise":
            return PointwiseLLMLabeler(lm, cfg.prompt, cfg.yes, cfg.no, cfg.field, cfg.batch_size, cfg.max_doc_tokens)
        return ListwiseLLMLabeler(lm, cfg.listwise_prompt, cfg.window, cfg.step, cfg.max_passage_tokens,
                                  cfg.max_new_tokens, cfg.batch_size, cfg.rank_score, cfg.rank_grades)


@LABEL_JOBS.register("llm-api")
class APIJob(LabelJob):
    config = APIConfig
    help = "graded 0-3 judgments from an OpenAI-compatible endpoint (UMBRELA prompt)"

    @staticmethod
    def build(cfg, collection):
        from rerankforge.labels.api import APILabeler, ChatClient, JudgmentCache

        base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL")
        model = cfg.model or os.environ.get("OPENAI_MODEL")
        if not base_url:
            raise ConfigError("label llm-api needs --base-url (or $OPENAI_BASE_URL)")
        if not model:
            raise ConfigError("label llm-api needs --model (or $OPENAI_MODEL)")
        client = ChatClient(base_url, model, os.environ.get(cfg.api_key_env) if cfg.api_key_env else None,
                            cfg.timeout, cfg.max_retries, cfg.backoff_base, cfg.backoff_max, cfg.temperature,
                            cfg.max_tokens, cfg.seed, cfg.max_consecutive_failures)
        cache = JudgmentCache(cfg.cache or str(Path(cfg.out).with_name(Path(cfg.out).name + ".cache.sqlite")))
        return APILabeler(client, cache, cfg.prompt, cfg.concurrency, cfg.field, cfg.max_passage_chars)


def build_labeler(kind: str, cfg: Any):
    """The labeler for ``kind`` and the ``text_of`` lookup (None without a collection)."""
    collection = None
    if cfg.collection:
        from rerankforge.data.beir import Collection

        collection = Collection(cfg.collection)
    labeler = LABEL_JOBS.get(kind).build(cfg, collection)
    return labeler, (collection.corpus.text if collection is not None else None)
