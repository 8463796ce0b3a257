"""Typed options for ``rerankforge retrieve`` / ``rerankforge mine``: YAML (``--config``) merged
under command-line flags, then turned into retrievers and a :class:`NegativePolicy`.

A mining YAML looks like::

    retriever: hybrid          # bm25 | dense | hybrid
    depth: 200
    bm25: {k1: 1.5, b: 0.75, method: lucene, stemmer: english, stopwords: en}
    dense: {model: /path/to/bi-encoder, index: hnsw, ef_search: 256}
    hybrid: {fusion: rrf, rrf_k: 60}
    policy: {negatives: 15, rank_min: 10, rank_max: 100, strategy: stratified, margin_rel: 0.95}

Unknown keys and wrongly typed values are errors naming the key.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rerankforge.errors import ConfigError
from rerankforge.mining.negatives import NegativePolicy


@dataclass
class BM25Options:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    delta: float = 0.5
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    backend: str = "bm25s"
    scorer: str = "sparse"
    epsilon: float = 0.25


@dataclass
class DenseOptions:
    model: str | None = None
    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    query_prefix: str | None = None
    doc_prefix: str | None = None
    encode_batch_size: int = 64
    bf16: bool | None = None
    device: str | None = None
    cache_dir: str | None = None
    cache: bool = True
    chunk_size: int = 16384
    index: str = "flat"
    nlist: int | None = None
    nprobe: int = 32
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    gpu: str = "auto"


@dataclass
class HybridOptions:
    components: list[str] = field(default_factory=lambda: ["bm25", "dense"])
    fusion: str = "rrf"
    rrf_k: float = 60.0
    weights: list[float] | None = None
    norm: str = "minmax"
    candidates: int | None = None


@dataclass
class RetrieveConfig:
    collection: str | None = None
    split: str | None = None
    out: str | None = None
    retriever: str = "bm25"
    depth: int | None = None
    batch_size: int = 256
    bm25: BM25Options = field(default_factory=BM25Options)
    dense: DenseOptions = field(default_factory=DenseOptions)
    hybrid: HybridOptions = field(default_factory=HybridOptions)


@dataclass
class MineConfig(RetrieveConfig):
    run: str | None = None
    save_run: str | None = None
    report: str | None = None
    text: bool = True
    policy: NegativePolicy = field(default_factory=NegativePolicy)


def load_config(schema: type, path: str | None, overrides: dict[str, Any]) -> Any:
    """Defaults <- YAML file <- ``overrides`` (nested dict); returns a ``schema`` instance."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.structured(schema)
    if path:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file {p} does not exist")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(p))
        except OmegaConfBaseException as err:
            raise ConfigError(f"{p}: {_omega_msg(err)}") from None
        except Exception as err:  # YAML syntax errors come from the yaml parser
            raise ConfigError(f"{p}: {err}") from None
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(overrides))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"command-line option: {_omega_msg(err)}") from None


def _omega_msg(err) -> str:
    first = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"{key}: {first}" if key and key not in first else first


# ---------------------------------------------------------------------- argparse
# (flag, dest path in the config, argparse kwargs); every default is None so only given flags override
_RETRIEVER_FLAGS: list[tuple[str, str, dict]] = [
    ("--retriever", "retriever", {"choices": ["bm25", "dense", "hybrid"], "help": "first stage (default bm25)"}),
    ("--depth", "depth", {"type": int, "help": "documents retrieved per query"}),
    ("--query-batch-size", "batch_size", {"type": int, "help": "queries per search batch (default 256)"}),
    ("--k1", "bm25.k1", {"type": float, "help": "BM25 k1 (default 1.5)"}),
    ("--b", "bm25.b", {"type": float, "help": "BM25 b (default 0.75)"}),
    ("--bm25-method", "bm25.method", {"choices": ["robertson", "lucene", "atire", "bm25l", "bm25+"],
                                      "help": "BM25 variant (default lucene)"}),
    ("--stemmer", "bm25.stemmer", {"help": "Snowball stemmer language, or 'none' (default english)"}),
    ("--stopwords", "bm25.stopwords", {"help": "bm25s stopword list (en, de, ...) or 'none' (default en)"}),
    ("--bm25-backend", "bm25.backend", {"choices": ["bm25s", "rank_bm25"], "help": "BM25 implementation"}),
    ("--model", "dense.model", {"help": "bi-encoder checkpoint (default: bundled all-MiniLM-L6-v2)"}),
    ("--pooling", "dense.pooling", {"choices": ["mean", "cls", "max", "mean_sqrt_len_tokens", "lasttoken"],
                                    "help": "override the checkpoint's pooling"}),
    ("--max-length", "dense.max_length", {"type": int, "help": "bi-encoder max tokens"}),
    ("--query-prefix", "dense.query_prefix", {"help": "text prepended to queries (e.g. 'query: ')"}),
    ("--doc-prefix", "dense.doc_prefix", {"help": "text prepended to documents (e.g. 'passage: ')"}),
    ("--encode-batch-size", "dense.encode_batch_size", {"type": int, "help": "bi-encoder batch size (default 64)"}),
    ("--bf16", "dense.bf16", {"action": argparse.BooleanOptionalAction,
                              "help": "bf16 encoding (default: when the hardware supports it)"}),
    ("--device", "dense.device", {"help": "torch device for encoding"}),
    ("--cache-dir", "dense.cache_dir", {"help": "embedding cache (default $RERANKFORGE_CACHE/embeddings "
                                                "or ~/.cache/rerankforge/embeddings)"}),
    ("--no-cache", "dense.cache", {"action": "store_const", "const": False, "help": "do not read/write the embedding cache"}),
    ("--index", "dense.index", {"choices": ["flat", "ivf", "hnsw"], "help": "faiss index (default flat = exact)"}),
    ("--nlist", "dense.nlist", {"type": int, "help": "IVF lists (default 4*sqrt(N))"}),
    ("--nprobe", "dense.nprobe", {"type": int, "help": "IVF lists probed (default 32)"}),
    ("--hnsw-m", "dense.hnsw_m", {"type": int, "help": "HNSW neighbours per node (default 32)"}),
    ("--ef-search", "dense.ef_search", {"type": int, "help": "HNSW search beam (default 128)"}),
    ("--gpu", "dense.gpu", {"choices": ["auto", "true", "false"], "help": "faiss on GPU (default auto)"}),
    ("--fusion", "hybrid.fusion", {"choices": ["rrf", "score"], "help": "hybrid fusion (default rrf)"}),
    ("--rrf-k", "hybrid.rrf_k", {"type": float, "help": "RRF constant k (default 60)"}),
    ("--weights", "hybrid.weights", {"type": float, "nargs": "+", "help": "per-component fusion weights"}),
    ("--norm", "hybrid.norm", {"choices": ["minmax", "zscore", "max", "none"],
                               "help": "score normalisation for --fusion score (default minmax)"}),
    ("--candidates", "hybrid.candidates", {"type": int, "help": "depth fetched from each hybrid component"}),
]

_POLICY_FLAGS: list[tuple[str, str, dict]] = [
    ("--negatives", "policy.negatives", {"type": int, "help": "negatives per query (default 15)"}),
    ("--rank-min", "policy.rank_min", {"type": int, "help": "first rank negatives may come from (default 1)"}),
    ("--rank-max", "policy.rank_max", {"type": int, "help": "last rank negatives may come from (default 100)"}),
    ("--strategy", "policy.strategy", {"choices": ["top", "uniform", "stratified"],
                                       "help": "sampling in the window (default uniform)"}),
    ("--strata", "policy.strata", {"type": int, "help": "rank strata for --strategy stratified (default 5)"}),
    ("--seed", "policy.seed", {"type": int, "help": "sampling seed"}),
    ("--margin-abs", "policy.margin_abs", {"type": float,
                                           "help": "drop negatives scoring above (positive score - MARGIN)"}),
    ("--margin-rel", "policy.margin_rel", {"type": float,
                                           "help": "drop negatives scoring above REL x positive score (e.g. 0.95)"}),
    ("--margin-ref", "policy.margin_ref", {"choices": ["min", "max"],
                                           "help": "which positive's score the margins use (default min)"}),
    ("--no-dedup", "policy.dedup", {"action": "store_const", "const": False,
                                    "help": "keep negatives whose normalised text equals a positive's"}),
    ("--rescore-model", "policy.rescore_model", {"help": "cross-encoder checkpoint to rescore candidates"}),
    ("--rescore-max-score", "policy.rescore_max_score", {"type": float,
                                                         "help": "drop negatives the cross-encoder scores above this"}),
    ("--rescore-margin", "policy.rescore_margin", {"type": float,
                                                   "help": "drop negatives within MARGIN of the positives' CE score"}),
    ("--rescore-batch-size", "policy.rescore_batch_size", {"type": int, "help": "cross-encoder batch size"}),
    ("--min-negatives", "policy.min_negatives", {"type": int,
                                                 "help": "skip queries with fewer negatives (default 1)"}),
]


def _dest(path: str) -> str:
    return "opt__" + path.replace(".", "__")


def _add(group, flags) -> None:
    for flag, path, kw in flags:
        if "choices" not in kw and "action" not in kw:
            kw = {"metavar": flag.lstrip("-").upper().replace("-", "_"), **kw}
        group.add_argument(flag, dest=_dest(path), default=None, **kw)


def add_retriever_args(p: argparse.ArgumentParser) -> None:
    _add(p.add_argument_group("first-stage retrieval"), _RETRIEVER_FLAGS)


def add_policy_args(p: argparse.ArgumentParser) -> None:
    _add(p.add_argument_group("negative sampling"), _POLICY_FLAGS)


_NONE_WORDS = {"none", "null", "off", ""}


def overrides_from_args(args: argparse.Namespace, plain: dict[str, str] | None = None) -> dict[str, Any]:
    """Nested override dict from the flags the user gave (``plain`` maps other dests to paths)."""
    out: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        node = out
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    for dest, value in vars(args).items():
        if value is None:
            continue
        if dest.startswith("opt__"):
            path = dest[5:].replace("__", ".")
            if path in ("bm25.stemmer", "bm25.stopwords") and str(value).lower() in _NONE_WORDS:
                value = None
            put(path, value)
        elif plain and dest in plain:
            put(plain[dest], value)
    if "dense" in out and "gpu" in out["dense"]:
        out["dense"]["gpu"] = str(out["dense"]["gpu"])
    return out


def build_retriever_from_config(cfg: RetrieveConfig, show_progress: bool = False):
    from rerankforge.mining.bm25 import BM25Retriever
    from rerankforge.mining.dense import DenseRetriever
    from rerankforge.mining.hybrid import HybridRetriever

    def make(name: str):
        if name == "bm25":
            return BM25Retriever(**asdict(cfg.bm25), batch_size=cfg.batch_size, show_progress=show_progress)
        if name == "dense":
            return DenseRetriever(**asdict(cfg.dense), batch_size=cfg.batch_size, show_progress=show_progress)
        raise ConfigError(f"unknown retriever {name!r}; choose bm25, dense or hybrid")

    if cfg.retriever == "hybrid":
        h = cfg.hybrid
        return HybridRetriever([make(c) for c in h.components], fusion=h.fusion, rrf_k=h.rrf_k, weights=h.weights,
                               norm=h.norm, candidates=h.candidates, batch_size=cfg.batch_size,
                               show_progress=show_progress)
    return make(cfg.retriever)


def config_dict(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
