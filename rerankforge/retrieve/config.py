"""Typed first-stage settings (``retrieve`` verb, the ``mine`` step, training recipes' data pipeline).

A retrieval YAML section looks like::

    retriever: hybrid          # bm25 | dense | hybrid | module:Class
    depth: 200
    bm25: {k1: 1.5, b: 0.75, method: lucene, stemmer: english, stopwords: en}
    dense: {model: /path/to/bi-encoder, index: hnsw, ef_search: 256}
    hybrid: {fusion: rrf, rrf_k: 60}

Flags (``--k1``, ``--index`` ...) are declared on the fields below (``rerankforge.config.option``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from rerankforge.config import option
from rerankforge.errors import ConfigError


@dataclass
class BM25Options:
    k1: float = option(1.5, flag="--k1", help="BM25 k1")
    b: float = option(0.75, flag="--b", help="BM25 b")
    method: str = option("lucene", flag="--bm25-method", choices=("robertson", "lucene", "atire", "bm25l", "bm25+"),
                         help="BM25 variant")
    delta: float = 0.5
    stemmer: Optional[str] = option("english", flag="--stemmer", help="Snowball stemmer language, or 'none'")
    stopwords: Optional[str] = option("en", flag="--stopwords", help="bm25s stopword list (en, de, ...) or 'none'")
    backend: str = option("bm25s", flag="--bm25-backend", choices=("bm25s", "rank_bm25"), help="BM25 implementation")
    scorer: str = "sparse"
    epsilon: float = 0.25


@dataclass
class DenseOptions:
    model: Optional[str] = option(None, flag="--model", help="bi-encoder checkpoint (default: bundled all-MiniLM-L6-v2)")
    pooling: Optional[str] = option(None, flag="--pooling",
                                    choices=("mean", "cls", "max", "mean_sqrt_len_tokens", "lasttoken"),
                                    help="override the checkpoint's pooling")
    normalize: Optional[bool] = None
    max_length: Optional[int] = option(None, flag="--max-length", help="bi-encoder max tokens")
    query_prefix: Optional[str] = option(None, flag="--query-prefix", help="text prepended to queries (e.g. 'query: ')")
    doc_prefix: Optional[str] = option(None, flag="--doc-prefix", help="text prepended to documents (e.g. 'passage: ')")
    encode_batch_size: int = option(64, flag="--encode-batch-size", help="bi-encoder batch size")
    bf16: Optional[bool] = option(None, flag="--bf16", help="bf16 encoding (default: when the hardware supports it)")
    device: Optional[str] = option(None, flag="--device", help="torch device for encoding")
    cache_dir: Optional[str] = option(None, flag="--cache-dir",
                                      help="embedding cache (default $RERANKFORGE_CACHE/embeddings or "
                                           "~/.cache/rerankforge/embeddings)")
    cache: bool = option(True, flag="--no-cache", help="do not read/write the embedding cache")
    chunk_size: int = 16384
    index: str = option("flat", flag="--index", choices=("flat", "ivf", "hnsw"), help="faiss index (flat = exact)")
    nlist: Optional[int] = option(None, flag="--nlist", help="IVF lists (default 4*sqrt(N))")
    nprobe: int = option(32, flag="--nprobe", help="IVF lists probed")
    hnsw_m: int = option(32, flag="--hnsw-m", help="HNSW neighbours per node")
    ef_construction: int = 200
    ef_search: int = option(128, flag="--ef-search", help="HNSW search beam")
    gpu: str = option("auto", flag="--gpu", choices=("auto", "true", "false"), help="faiss on GPU")


@dataclass
class HybridOptions:
    components: list[str] = option(factory=lambda: ["bm25", "dense"])
    fusion: str = option("rrf", flag="--fusion", choices=("rrf", "score"), help="hybrid fusion")
    rrf_k: float = option(60.0, flag="--rrf-k", help="RRF constant k")
    weights: Optional[list[float]] = option(None, flag="--weights", help="per-component fusion weights")
    norm: str = option("minmax", flag="--norm", choices=("minmax", "zscore", "max", "none"),
                       help="score normalisation for --fusion score")
    candidates: Optional[int] = option(None, flag="--candidates", help="depth fetched from each hybrid component")


@dataclass
class RetrieverConfig:
    """Which first stage and its settings (no data paths: those belong to the verb or step)."""

    retriever: str = option("bm25", flag="--retriever", help="bm25, dense, hybrid or module:Class")
    depth: Optional[int] = option(None, flag="--depth",
                                  help="documents retrieved per query (default 100; when mining, at least rank_max)")
    batch_size: int = option(256, flag="--query-batch-size", help="queries per search batch")
    bm25: BM25Options = option(factory=BM25Options)
    dense: DenseOptions = option(factory=DenseOptions)
    hybrid: HybridOptions = option(factory=HybridOptions)

    def validate(self) -> None:
        if self.depth is not None and self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size (--query-batch-size) must be >= 1, got {self.batch_size}")

    def key(self) -> dict:
        """What defines the index and its results (for caches): everything but batch sizes."""
        d = asdict(self)
        d.pop("batch_size")
        d["dense"].pop("encode_batch_size")
        return d


@dataclass
class RetrieveConfig(RetrieverConfig):
    """``rerankforge retrieve``."""

    collection: Optional[str] = option(None, flag="--collection", metavar="DIR", help="BEIR collection directory")
    split: Optional[str] = option(None, flag="--split", metavar="SPLIT",
                                  help="qrels split whose queries are searched (all queries if it has no qrels)")
    out: Optional[str] = option(None, flag="--out", metavar="RUN.trec", help="output TREC run")
    progress: bool = option(True, flag="--no-progress", help="no progress bars")

    def validate(self) -> None:
        super().validate()
        if not self.collection:
            raise ConfigError("no collection given (--collection DIR or 'collection:' in the config)")
        if not self.split:
            raise ConfigError("no split given (--split SPLIT)")
        if not self.out:
            raise ConfigError("no output given (--out RUN.trec)")


def build_retriever_from_config(cfg: RetrieverConfig, show_progress: bool = False):
    """The retriever ``cfg`` names, not yet indexed."""
    from rerankforge.retrieve.base import build_retriever

    def make(name: str):
        options = {"bm25": cfg.bm25, "dense": cfg.dense}.get(name)
        params = asdict(options) if options is not None else {}
        return build_retriever(name, **params, batch_size=cfg.batch_size, show_progress=show_progress)

    if cfg.retriever == "hybrid":
        h = cfg.hybrid
        return build_retriever("hybrid", components=[make(c) for c in h.components], fusion=h.fusion,
                               rrf_k=h.rrf_k, weights=h.weights, norm=h.norm, candidates=h.candidates,
                               batch_size=cfg.batch_size, show_progress=show_progress)
    return make(cfg.retriever)
