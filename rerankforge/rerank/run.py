"""Rerank a first-stage run with any rerankforge model."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from rerankforge.data.beir import Corpus
from rerankforge.data.trec import Run
from rerankforge.models.base import Reranker


@dataclass
class RerankStats:
    queries: int
    pairs: int
    seconds: float

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / max(self.seconds, 1e-9)

    @property
    def ms_per_query(self) -> float:
        return 1000.0 * self.seconds / max(self.queries, 1)


def rerank(model: Reranker, queries: Mapping[str, str], corpus: Corpus, run: Run, depth: int = 100,
           batch_size: int = 64, bf16: bool = True, progress: bool = False) -> tuple[Run, RerankStats]:
    """Score the top-``depth`` documents of each query in ``run`` and sort by the model's score.
    Queries without text in ``queries`` are dropped; documents below ``depth`` are dropped."""
    pairs = [(qid, did) for qid, docs in run.items() if qid in queries for did, _ in docs[:depth]]
    start = time.perf_counter()
    scores = model.score_pairs([queries[q] for q, _ in pairs], [corpus.text(d) for _, d in pairs],
                               batch_size=batch_size, bf16=bf16, progress=progress)
    seconds = time.perf_counter() - start
    out: Run = {}
    for (qid, did), s in zip(pairs, scores.tolist()):
        out.setdefault(qid, []).append((did, s))
    for qid in out:
        out[qid].sort(key=lambda e: -e[1])
    return out, RerankStats(len(out), len(pairs), seconds)
