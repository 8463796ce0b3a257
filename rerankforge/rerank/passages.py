"""Long documents: split into overlapping word windows, score each passage, aggregate per document
(Dai & Callan, SIGIR 2019: FirstP, MaxP, SumP).

* ``maxp``: the best passage's score;
* ``firstp``: the first passage only (the others are not even scored);
* ``sum``: the sum of passage scores (rewards documents relevant in many places; the result is
  no longer a logit, so probability thresholds do not apply to it).

Windows of ``words`` words start every ``stride`` words until one reaches the end of the
document, so every word is covered and the last window may be shorter.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from rerankforge.data.beir import Corpus
from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError
from rerankforge.rerank.run import RerankStats
from rerankforge.models.base import Reranker

AGGREGATIONS = ("maxp", "firstp", "sum")


def split_passages(text: str, words: int, stride: int | None = None) -> list[str]:
    stride = stride or words
    if words < 1 or stride < 1:
        raise ConfigError(f"passage words and stride must be >= 1, got words={words} stride={stride}")
    if stride > words:
        raise ConfigError(f"passage stride {stride} > passage length {words} would skip words")
    tokens = text.split()
    if len(tokens) <= words:
        return [text]
    out = []
    for start in range(0, len(tokens), stride):
        out.append(" ".join(tokens[start : start + words]))
        if start + words >= len(tokens):
            break
    return out


def aggregate(scores, how: str) -> float:
    scores = np.asarray(scores, dtype=np.float64)
    if how == "maxp":
        return float(scores.max())
    if how == "firstp":
        return float(scores[0])
    if how == "sum":
        return float(scores.sum())
    raise ConfigError(f"unknown passage aggregation {how!r} ({', '.join(AGGREGATIONS)})")


def rerank_passages(model: Reranker, queries: Mapping[str, str], corpus: Corpus, run: Run, depth: int = 100,
                    words: int = 128, stride: int | None = None, how: str = "maxp", batch_size: int = 64,
                    bf16: bool = True, progress: bool = False) -> tuple[Run, RerankStats]:
    """Like ``rerank`` but each document is scored as its passages, aggregated by ``how``.
    ``RerankStats.pairs`` counts the (query, passage) pairs actually scored."""
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown passage aggregation {how!r} ({', '.join(AGGREGATIONS)})")
    owners: list[tuple[str, str]] = []
    q_texts, p_texts = [], []
    for qid, docs in run.items():
        if qid not in queries:
            continue
        for did, _ in docs[:depth]:
            passages = split_passages(corpus.text(did), words, stride)
            for p in passages[:1] if how == "firstp" else passages:
                owners.append((qid, did))
                q_texts.append(queries[qid])
                p_texts.append(p)
    start = time.perf_counter()
    scores = model.score_pairs(q_texts, p_texts, batch_size=batch_size, bf16=bf16, progress=progress)
    seconds = time.perf_counter() - start
    per_doc: dict[str, dict[str, list[float]]] = {}
    for (qid, did), s in zip(owners, scores.tolist()):
        per_doc.setdefault(qid, {}).setdefault(did, []).append(s)
    out: Run = {qid: sorted(((d, aggregate(ss, how)) for d, ss in docs.items()), key=lambda e: -e[1])
                for qid, docs in per_doc.items()}
    return out, RerankStats(len(out), len(owners), seconds)
