"""Rerank a collection's first-stage run and post-process it: what ``rerankforge rerank`` runs.

Steps, in this order (each a library call):

1. scoring: whole documents, or passages of ``passage_words`` words (``rerank.passages``);
2. ``threshold``: drop candidates with sigmoid(score) < P, on the model's own (calibrated)
   scores (``rerank.threshold``);
3. ``fusion_alpha``: A·norm(first stage) + (1 − A)·norm(reranker) (``rerank.fusion.fuse_with_first_stage``);
4. ``rrf``: reciprocal-rank fusion of the result with other runs (``retrieve.fusion.rrf``);
5. ``mmr_lambda``: MMR diversification with TF-IDF cosine between documents (``rerank.mmr``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rerankforge.config import option, require
from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError


@dataclass
class RerankConfig:
    model: Optional[str] = option(None, flag="--model", help="exported model directory")
    collection: Optional[str] = option(None, flag="--collection", help="BEIR collection directory")
    split: Optional[str] = option(None, flag="--split", help="qrels split whose queries are reranked")
    run: Optional[str] = option(None, flag="--run", help="first-stage TREC run")
    depth: int = option(100, flag="--depth", help="rerank the top K of each query")
    out: Optional[str] = option(None, flag="--out", help="output TREC run")
    batch_size: int = option(64, flag="--batch-size", help="pairs per forward pass")
    bf16: bool = option(True, flag="--no-bf16", help="score in float32")
    #: int8 dynamic quantisation of the model's linear layers (CPU; lossy, measured by
    #: scripts/bench_speed.py: pairs/s and SciFact nDCG@10 against float)
    quantize: Optional[str] = option(None, flag="--quantize", choices=("int8",),
                                     help="score with an int8-quantised copy of the model (CPU)")
    #: the fast scoring path (cross-encoders): weights in the scoring dtype, the last layer for
    #: [CLS] only, torch.compile; equal scores up to rounding (models/fast_inference.py)
    optimize: bool = option(False, flag="--optimize", help="score through the fast path (cross-encoders; torch.compile)")
    passage_words: Optional[int] = option(None, flag="--passage-words", help="split documents into passages of N words")
    passage_stride: Optional[int] = option(None, flag="--passage-stride",
                                           help="words between passage starts (default N/2: 50% overlap)")
    passage_agg: str = option("maxp", flag="--passage-agg", choices=("maxp", "firstp", "sum"),
                              help="document score from its passages' scores")
    threshold: Optional[float] = option(None, flag="--threshold",
                                        help="drop candidates with sigmoid(score) < P (calibrated models)")
    fusion_alpha: Optional[float] = option(None, flag="--fusion-alpha",
                                           help="fuse with the first stage: A*first + (1-A)*reranker")
    fusion_norm: str = option("minmax", flag="--fusion-norm", choices=("minmax", "zscore"),
                              help="per-query score normalisation before fusion")
    rrf: list[str] = option(factory=list, flag="--rrf", metavar="OTHER.trec",
                            help="reciprocal-rank fuse the result with these runs")
    rrf_k: int = option(60, flag="--rrf-k", help="RRF constant k")
    mmr_lambda: Optional[float] = option(None, flag="--mmr-lambda",
                                         help="MMR diversification, 1 = pure relevance, 0 = pure novelty")
    mmr_depth: Optional[int] = option(None, flag="--mmr-depth", help="diversify only the top N (default: all)")
    progress: bool = option(True, flag="--no-progress", help="no progress bar")

    def validate(self) -> None:
        require(self, "model", "collection", "split", "run", "out")
        for key in ("depth", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.passage_words is not None and self.passage_words < 1:
            raise ConfigError(f"passage_words must be >= 1, got {self.passage_words}")
        if self.threshold is not None and self.passage_words and self.passage_agg == "sum":
            raise ConfigError("--threshold needs logit scores; --passage-agg sum adds passage logits, which is not one")
        if self.fusion_alpha is not None and not 0.0 <= self.fusion_alpha <= 1.0:
            raise ConfigError(f"--fusion-alpha must be in [0, 1], got {self.fusion_alpha}")
        if self.optimize and self.quantize:
            raise ConfigError("--optimize and --quantize are alternatives: choose one")
        if self.passage_stride and not self.passage_words:
            raise ConfigError("--passage-stride needs --passage-words")


@dataclass
class RerankResult:
    first: Run
    reranked: Run
    final: Run
    stats: Any
    steps: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] | None = None


def rerank_collection(cfg: RerankConfig) -> RerankResult:
    """Rerank ``cfg.run`` for the split's judged queries, post-process, and evaluate when judged."""
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run, truncate
    from rerankforge.models import load_reranker
    from rerankforge.rerank.run import rerank

    collection = Collection(cfg.collection)
    first = read_run(cfg.run, collection.queries, collection.corpus)
    qrels = collection.qrels(cfg.split)
    first = truncate({q: d for q, d in first.items() if q in qrels}, cfg.depth)
    model = load_reranker(cfg.model)
    if cfg.quantize == "int8":
        model.quantize_int8()
    if cfg.optimize:
        if not hasattr(model, "optimize_inference"):
            raise ConfigError(f"--optimize applies to cross-encoders; {cfg.model} is a {type(model).__name__}")
        model.optimize_inference()
    if cfg.passage_words:
        from rerankforge.rerank.passages import rerank_passages

        reranked, stats = rerank_passages(model, collection.queries, collection.corpus, first, cfg.depth,
                                          cfg.passage_words, cfg.passage_stride or max(1, cfg.passage_words // 2),
                                          cfg.passage_agg, cfg.batch_size, cfg.bf16, progress=cfg.progress)
    else:
        reranked, stats = rerank(model, collection.queries, collection.corpus, first, cfg.depth,
                                 cfg.batch_size, cfg.bf16, progress=cfg.progress)
    final, steps = reranked, []
    if cfg.threshold is not None:
        from rerankforge.rerank.threshold import apply_threshold

        final = apply_threshold(final, cfg.threshold)
        kept, total = sum(len(d) for d in final.values()), sum(len(d) for d in reranked.values())
        steps.append(f"threshold {cfg.threshold}: kept {kept}/{total} candidates")
    if cfg.fusion_alpha is not None:
        from rerankforge.rerank.fusion import fuse_with_first_stage as fuse

        final = fuse(first, final, cfg.fusion_alpha, cfg.fusion_norm)
        steps.append(f"fused with the first stage (alpha={cfg.fusion_alpha}, {cfg.fusion_norm})")
    if cfg.rrf:
        from rerankforge.retrieve.fusion import rrf

        others = [read_run(p, collection.queries, collection.corpus) for p in cfg.rrf]
        fused = rrf([final, *others], k=cfg.rrf_k)
        final = {q: docs for q, docs in fused.items() if q in final}
        steps.append(f"RRF with {len(others)} run(s) (k={cfg.rrf_k})")
    if cfg.mmr_lambda is not None:
        from rerankforge.rerank.mmr import mmr_rerank

        final = mmr_rerank(final, collection.corpus.text, cfg.mmr_lambda, cfg.mmr_depth)
        steps.append(f"MMR (lambda={cfg.mmr_lambda}, TF-IDF cosine, top {cfg.mmr_depth or 'all'})")
    metrics = None
    if first:
        from rerankforge.eval import evaluate

        metrics = {"first stage": evaluate(qrels, first), "reranked": evaluate(qrels, reranked)}
        if steps:
            metrics["final (post-processed)"] = evaluate(qrels, final)
    return RerankResult(first, reranked, final, stats, steps, metrics)
