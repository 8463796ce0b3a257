"""Hybrid first stage: several retrievers fused per query (RRF or normalised score fusion)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError
from rerankforge.retrieve.base import Retriever, build_retriever, register_retriever
from rerankforge.retrieve.corpus import CorpusLike
from rerankforge.retrieve.fusion import FUSIONS, fuse


@register_retriever("hybrid")
class HybridRetriever(Retriever):
    """Fuse the top-``candidates`` of each component (default ``max(k, 100)``) into the top-``k``.

    ``components`` are retrievers or ``{"name": ..., **params}`` dicts (default BM25 + dense MiniLM);
    ``fusion="rrf"`` uses ``rrf_k``; ``fusion="score"`` sums ``weights``-weighted scores normalised
    per query with ``norm`` (minmax, zscore, max).
    """

    def __init__(self, components: Sequence[Retriever | Mapping] | None = None, fusion: str = "rrf",
                 rrf_k: float = 60.0, weights: Sequence[float] | None = None, norm: str = "minmax",
                 candidates: int | None = None, batch_size: int = 256, show_progress: bool = False):
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
        specs = components if components is not None else [{"name": "bm25"}, {"name": "dense"}]
        self.components: list[Retriever] = []
        for spec in specs:
            if isinstance(spec, Retriever):
                self.components.append(spec)
            else:
                params = dict(spec)
                name = params.pop("name", None)
                if name is None or name == "hybrid":
                    raise ConfigError(f"hybrid component needs a name other than hybrid, got {spec!r}")
                self.components.append(build_retriever(name, **params))
        if len(self.components) < 2:
            raise ConfigError("hybrid retrieval needs at least two component retrievers")
        if weights is not None and len(weights) != len(self.components):
            raise ConfigError(f"{len(weights)} weights for {len(self.components)} hybrid components")
        self.fusion, self.rrf_k, self.weights, self.norm = fusion, float(rrf_k), weights, norm
        self.candidates, self.batch_size, self.show_progress = candidates, batch_size, show_progress

    def config(self) -> dict:
        return {"name": self.name, "fusion": self.fusion, "rrf_k": self.rrf_k, "weights": self.weights,
                "norm": self.norm, "candidates": self.candidates, "components": [c.config() for c in self.components]}

    def index(self, corpus: CorpusLike) -> None:
        for c in self.components:
            c.index(corpus)

    def search_batch(self, queries: Mapping[str, str], k: int) -> Run:
        depth = max(k, self.candidates or 100)
        runs = [c.search_batch(queries, depth) for c in self.components]
        fused = fuse(runs, self.fusion, k=self.rrf_k, weights=self.weights, norm=self.norm, depth=k)
        for qid in queries:
            fused.setdefault(qid, [])
        return fused
