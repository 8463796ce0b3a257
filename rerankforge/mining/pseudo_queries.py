"""Pseudo-queries from document titles, for distillation without judged queries.

A teacher's scores are labels in themselves, so distillation needs queries, not judgments: the
more (and more varied) queries the student sees the teacher rank, the better it imitates it.
Titles are the cheapest queries a corpus offers (title -> body pairs are a standard weak
supervision source, e.g. the title/passage pairs of E5 pre-training, Wang et al. 2022). Every
sampled document whose title has at least ``min_words`` words becomes a query ``title:<doc id>``
whose one judged-relevant document is that document (used by graded losses; the teacher scores
every candidate anyway).

Transductive by design, like GPL or InPars: the queries come from the corpus the model will
rerank, never from its evaluation queries or judgments.
"""

from __future__ import annotations

import random
from pathlib import Path

from rerankforge.data.beir import collection_file
from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.utils.io import iter_jsonl

PREFIX = "title:"


def title_queries(collection_root: str | Path, n: int, seed: int = 0, min_words: int = 4,
                  exclude: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``n`` pseudo-queries (``{qid: title}``) and their qrels (``{qid: {doc_id: 1}}``), sampled
    reproducibly by ``seed`` from the documents of ``collection_root``'s corpus whose titles have
    at least ``min_words`` words (documents in ``exclude`` are skipped)."""
    if n < 0:
        raise ConfigError(f"number of pseudo-queries must be >= 0, got {n}")
    path = collection_file(Path(collection_root), "corpus.jsonl")
    titles: list[tuple[str, str]] = []
    for lineno, obj in iter_jsonl(path):
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise DataFormatError(path, lineno, '"title" must be a string')
        words = (title or "").split()
        doc_id = str(obj.get("_id", ""))
        body = (obj.get("text") or "").strip()
        # A title without a body would be a query whose answer is itself, word for word.
        if doc_id and doc_id not in exclude and body and len(words) >= min_words:
            titles.append((doc_id, " ".join(words)))
    if n and not titles:
        raise ConfigError(f"{path}: no document has a title of >= {min_words} words and a body; "
                          f"pseudo-queries from titles are impossible here")
    rng = random.Random(seed)
    chosen = rng.sample(titles, min(n, len(titles)))
    queries = {PREFIX + doc: title for doc, title in chosen}
    qrels = {PREFIX + doc: {doc: 1} for doc, _ in chosen}
    return queries, qrels
