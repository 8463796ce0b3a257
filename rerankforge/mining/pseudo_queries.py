"""Pseudo-queries from document titles and sentences, for distillation without judged queries.

A teacher's scores are labels in themselves, so distillation needs queries, not judgments: the
more (and more varied) queries the student sees the teacher rank, the better it imitates it.
Titles are the cheapest queries a corpus offers (title -> body pairs are a standard weak
supervision source, e.g. the title/passage pairs of E5 pre-training, Wang et al. 2022). Every
sampled document whose title has at least ``min_words`` words becomes a query ``title:<doc id>``
whose one judged-relevant document is that document (used by graded losses; the teacher scores
every candidate anyway).

Sentences of document bodies are a second, larger source (about ten per abstract): a claim-like
sentence is close to what SciFact-style queries are, and Contriever's "independent cropping"
(Izacard et al. 2022) uses spans of a document as its queries the same way. A sentence query
``sent:<doc id>:<i>`` keeps its source document as the one judged-relevant document.

Transductive by design, like GPL or InPars: the queries come from the corpus the model will
rerank, never from its evaluation queries or judgments.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from rerankforge.data.beir import collection_file, iter_corpus_documents, resolve_collection
from rerankforge.errors import ConfigError

PREFIX = "title:"
SENTENCE_PREFIX = "sent:"
# A sentence ends at . ! or ? followed by space and an upper-case letter or digit (not "e.g. the").
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


def _documents(path: Path, exclude: set[str] | frozenset[str]):
    """(doc id, title, body) of every corpus document with an id outside ``exclude``."""
    for _, doc_id, title, body in iter_corpus_documents(path):
        if doc_id not in exclude:
            yield doc_id, title, body


def title_queries(collection_root: str | Path, n: int, seed: int = 0, min_words: int = 4,
                  exclude: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``n`` pseudo-queries (``{qid: title}``) and their qrels (``{qid: {doc_id: 1}}``), sampled
    reproducibly by ``seed`` from the documents of ``collection_root``'s corpus whose titles have
    at least ``min_words`` words (documents in ``exclude`` are skipped)."""
    if n < 0:
        raise ConfigError(f"number of pseudo-queries must be >= 0, got {n}")
    path = collection_file(resolve_collection(collection_root), "corpus.jsonl")
    titles: list[tuple[str, str]] = []
    for doc_id, title, body in _documents(path, exclude):
        words = title.split()
        # A title without a body would be a query whose answer is itself, word for word.
        if body.strip() and len(words) >= min_words:
            titles.append((doc_id, " ".join(words)))
    if n and not titles:
        raise ConfigError(f"{path}: no document has a title of >= {min_words} words and a body; "
                          f"pseudo-queries from titles are impossible here")
    rng = random.Random(seed)
    chosen = rng.sample(titles, min(n, len(titles)))
    queries = {PREFIX + doc: title for doc, title in chosen}
    qrels = {PREFIX + doc: {doc: 1} for doc, _ in chosen}
    return queries, qrels


def split_sentences(text: str) -> list[str]:
    return [" ".join(s.split()) for s in _SENTENCE_END.split(text) if s.strip()]


def sentence_queries(collection_root: str | Path, n: int, seed: int = 0, min_words: int = 6, max_words: int = 40,
                     exclude: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``n`` pseudo-queries made from sentences of document bodies (``{qid: sentence}``) and their
    qrels (``{qid: {source doc: 1}}``), sampled reproducibly by ``seed`` from every sentence of
    ``min_words``..``max_words`` words of a document outside ``exclude``."""
    if n < 0:
        raise ConfigError(f"number of pseudo-queries must be >= 0, got {n}")
    if not 0 < min_words <= max_words:
        raise ConfigError(f"sentence length bounds must satisfy 0 < min_words <= max_words, got {min_words}, {max_words}")
    path = collection_file(resolve_collection(collection_root), "corpus.jsonl")
    sentences: list[tuple[str, str]] = []
    for doc_id, _, body in _documents(path, exclude):
        for i, sentence in enumerate(split_sentences(body)):
            if min_words <= len(sentence.split()) <= max_words:
                sentences.append((f"{SENTENCE_PREFIX}{doc_id}:{i}", sentence))
    if n and not sentences:
        raise ConfigError(f"{path}: no document body has a sentence of {min_words}-{max_words} words; "
                          f"pseudo-queries from sentences are impossible here")
    chosen = random.Random(seed).sample(sentences, min(n, len(sentences)))
    queries = dict(chosen)
    qrels = {qid: {qid[len(SENTENCE_PREFIX):].rsplit(":", 1)[0]: 1} for qid in queries}
    return queries, qrels


SPAN_PREFIX = "span:"


def span_queries(collection_root: str | Path, n: int, seed: int = 0, min_words: int = 5, max_words: int = 12,
                 max_fraction: float = 0.5,
                 exclude: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """``n`` pseudo-queries that are random word spans of documents (``{"span:<doc id>": span}``)
    and their qrels (``{qid: {source doc: 1}}``), one per sampled document, reproducibly by ``seed``.

    The one generator every corpus supports: it needs neither titles nor sentence punctuation
    (lower-case, unpunctuated collections such as Vaswani or Cranfield defeat ``sentence_queries``).
    A span is ``min_words``..``max_words`` words of the document's whitespace-normalised text
    (title and body, as every model sees it) and at most ``max_fraction`` of its words, so the
    document keeps context of its own when the span is cut out of it (the inverse cloze task of
    Lee et al. 2019; random cropping in Contriever, Izacard et al. 2022)."""
    from rerankforge.data.beir import doc_text

    if n < 0:
        raise ConfigError(f"number of pseudo-queries must be >= 0, got {n}")
    if not 0 < min_words <= max_words:
        raise ConfigError(f"span length bounds must satisfy 0 < min_words <= max_words, got {min_words}, {max_words}")
    path = collection_file(resolve_collection(collection_root), "corpus.jsonl")
    docs = [(doc_id, words) for doc_id, title, body in _documents(path, exclude)
            if len(words := doc_text(title, body).split()) * max_fraction >= min_words]
    if n and not docs:
        raise ConfigError(f"{path}: no document has {int(min_words / max_fraction)} or more words; "
                          f"span pseudo-queries are impossible here")
    rng = random.Random(seed)
    queries, qrels = {}, {}
    for doc_id, words in rng.sample(docs, min(n, len(docs))):
        length = rng.randint(min_words, min(max_words, int(len(words) * max_fraction)))
        start = rng.randrange(len(words) - length + 1)
        queries[SPAN_PREFIX + doc_id] = " ".join(words[start : start + length])
        qrels[SPAN_PREFIX + doc_id] = {doc_id: 1}
    return queries, qrels
