"""Corpus access for retrieval and mining at scale.

* :class:`CorpusStream` reads a BEIR ``corpus.jsonl[.gz]`` in batches with the rules of
  :func:`rerankforge.data.beir.load_corpus` (missing/duplicate ids are errors, empty documents are
  skipped) but keeps only the document ids, so indexing 10M passages never holds 10M texts.
* :class:`DocIds` stores ids as one numpy bytes array (no Python object per passage) with a
  sorted view for id -> row lookups.
* :func:`fetch_texts` / :func:`text_keys` get texts / normalised-text hashes of the few documents
  a step needs, from an in-memory :class:`~rerankforge.data.beir.Corpus` or with one pass over a stream.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np

from rerankforge.data.beir import Corpus, doc_text, iter_corpus_documents
from rerankforge.errors import DataFormatError

log = logging.getLogger(__name__)


class DocIds(Sequence):
    """Document ids in row order, stored as UTF-8 bytes in one numpy array."""

    def __init__(self, ids: np.ndarray):
        self._ids = ids
        self._order: np.ndarray | None = None
        self._sorted_ids: np.ndarray | None = None

    @classmethod
    def from_list(cls, ids: Sequence[str]) -> DocIds:
        return cls(np.array([d.encode("utf-8") for d in ids], dtype=bytes))

    @classmethod
    def concat(cls, parts: list[np.ndarray]) -> DocIds:
        return cls(np.concatenate(parts) if parts else np.zeros(0, dtype="S1"))

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, row):
        if isinstance(row, (int, np.integer)):
            return self._ids[row].decode("utf-8")
        return [b.decode("utf-8") for b in self._ids[row]]

    def take(self, rows: np.ndarray) -> list[str]:
        return [b.decode("utf-8") for b in self._ids[rows].tolist()]

    @property
    def nbytes(self) -> int:
        extra = self._order.nbytes + self._sorted_ids.nbytes if self._order is not None else 0
        return self._ids.nbytes + extra

    def _sorted(self) -> np.ndarray:
        if self._order is None:
            self._order = np.argsort(self._ids, kind="stable")
            self._sorted_ids = self._ids[self._order]
        return self._order

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Row of each id, -1 where unknown."""
        keys = np.array([d.encode("utf-8") for d in ids], dtype=bytes)
        if len(keys) == 0 or len(self._ids) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        order = self._sorted()
        sorted_ids = self._sorted_ids
        pos = np.searchsorted(sorted_ids, keys)
        pos_c = np.minimum(pos, len(order) - 1)
        found = sorted_ids[pos_c] == keys
        return np.where(found, order[pos_c], -1).astype(np.int64)

    def row(self, doc_id: str) -> int:
        return int(self.rows([doc_id])[0])

    def __contains__(self, doc_id) -> bool:
        return isinstance(doc_id, str) and self.row(doc_id) >= 0

    def duplicates(self) -> list[str]:
        self._sorted()
        s = self._sorted_ids
        dup = np.flatnonzero(s[1:] == s[:-1])
        return [s[i].decode("utf-8") for i in dup[:5]]


class CorpusStream:
    """A BEIR corpus file read batch by batch; ``ids``, ``fingerprint`` and ``skipped_empty`` are
    known after the first complete pass."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            for name in ("corpus.jsonl", "corpus.jsonl.gz"):
                if (path / name).exists():
                    path = path / name
                    break
            else:
                raise FileNotFoundError(f"{path}: no corpus.jsonl or corpus.jsonl.gz")
        if not path.exists():
            raise FileNotFoundError(f"corpus file {path} does not exist")
        self.path = path
        self.ids: DocIds | None = None
        self.fingerprint: str | None = None
        self.skipped_empty = 0
        self.empty_ids: set[str] = set()  # documents skipped for having no text (qrels may still name them)
        self._text_keys: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"CorpusStream({str(self.path)!r})"

    def __len__(self) -> int:
        return len(self.require_ids())

    def __contains__(self, doc_id) -> bool:
        return doc_id in self.require_ids()

    def require_ids(self) -> DocIds:
        if self.ids is None:
            for _ in self.batches(100_000):
                pass
        return self.ids

    def _records(self) -> Iterator[tuple[int, str, str]]:
        for lineno, doc_id, title, body in iter_corpus_documents(self.path):
            yield lineno, doc_id, doc_text(title, body)

    def batches(self, size: int) -> Iterator[tuple[list[str], list[str]]]:
        """Yield ``(ids, texts)`` batches; a complete pass also validates ids and records ``ids``."""
        digest = hashlib.sha256()
        parts: list[np.ndarray] = []
        skipped = 0
        empty: set[str] = set()
        ids: list[str] = []
        texts: list[str] = []
        for _, doc_id, text in self._records():
            if not text:
                skipped += 1
                empty.add(doc_id)
                continue
            ids.append(doc_id)
            texts.append(text)
            if len(ids) >= size:
                _digest_batch(digest, ids, texts)
                parts.append(np.array([d.encode("utf-8") for d in ids], dtype=bytes))
                yield ids, texts
                ids, texts = [], []
        if ids:
            _digest_batch(digest, ids, texts)
            parts.append(np.array([d.encode("utf-8") for d in ids], dtype=bytes))
            yield ids, texts
        all_ids = DocIds.concat(parts)
        if len(all_ids) == 0:
            raise DataFormatError(self.path, None, "corpus has no documents")
        dups = all_ids.duplicates()
        if dups:
            lines = [n for n, d, _ in self._records() if d == dups[0]]
            raise DataFormatError(self.path, lines[1], f"duplicate document id {dups[0]!r} (first on line {lines[0]})")
        self.ids, self.fingerprint, self.skipped_empty, self.empty_ids = all_ids, digest.hexdigest(), skipped, empty
        if skipped:
            log.warning("%s: skipped %d documents with empty title and text", self.path, skipped)

    def text_keys(self) -> np.ndarray:
        """:func:`text_key` of every document in row order (8 bytes per document; one pass, cached)."""
        if self._text_keys is None:
            keys = [text_key(t) for _, _, t in self._records() if t]
            self._text_keys = np.array(keys, dtype=np.uint64)
        return self._text_keys

    def texts(self, wanted: Iterable[str]) -> dict[str, str]:
        """Texts of the ``wanted`` ids (one pass over the file; unknown ids are absent)."""
        wanted = set(wanted)
        out: dict[str, str] = {}
        if not wanted:
            return out
        for _, doc_id, text in self._records():
            if doc_id in wanted and text:
                out[doc_id] = text
                if len(out) == len(wanted):
                    break
        return out


CorpusLike = Union[Corpus, CorpusStream]


def _digest_batch(digest, ids: list[str], texts: list[str]) -> None:
    for d, t in zip(ids, texts):
        digest.update(d.encode("utf-8"))
        digest.update(b"\x00")
        digest.update(t.encode("utf-8"))
        digest.update(b"\x01")


def corpus_batches(corpus: CorpusLike, size: int) -> Iterator[tuple[list[str], list[str]]]:
    """``(ids, texts)`` batches of an in-memory corpus or a stream."""
    if isinstance(corpus, Corpus):
        for s in range(0, len(corpus.ids), size):
            yield corpus.ids[s : s + size], corpus.texts[s : s + size]
    elif isinstance(corpus, CorpusStream):
        yield from corpus.batches(size)
    else:
        raise TypeError(f"expected a Corpus or CorpusStream, got {type(corpus).__name__}")


def corpus_ids(corpus: CorpusLike) -> DocIds:
    if isinstance(corpus, CorpusStream):
        return corpus.require_ids()
    return DocIds.from_list(corpus.ids)


def corpus_fingerprint(corpus: CorpusLike) -> str:
    """sha256 over (id, text) pairs in order; equal for a file and the Corpus loaded from it."""
    if isinstance(corpus, CorpusStream):
        if corpus.fingerprint is None:
            corpus.require_ids()
        return corpus.fingerprint
    cached = getattr(corpus, "_rf_fingerprint", None)
    if cached is None:
        digest = hashlib.sha256()
        _digest_batch(digest, corpus.ids, corpus.texts)
        cached = digest.hexdigest()
        corpus._rf_fingerprint = cached  # Corpus is treated as immutable once loaded
    return cached


def fetch_texts(corpus: CorpusLike, ids: Iterable[str]) -> dict[str, str]:
    if isinstance(corpus, CorpusStream):
        return corpus.texts(ids)
    return {d: corpus.texts[corpus.index[d]] for d in ids if d in corpus.index}


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form used for duplicate detection."""
    if text.isascii():  # fast path: nothing to fold beyond case
        return _NON_WORD.sub(" ", text.lower()).strip()
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _NON_WORD.sub(" ", text).strip()


def text_key(text: str) -> int:
    """64-bit hash of :func:`normalize_text`; equal keys mean the same passage up to formatting."""
    return int.from_bytes(hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).digest(), "little")


def text_keys(corpus: CorpusLike, ids: Iterable[str]) -> dict[str, int]:
    return {d: text_key(t) for d, t in fetch_texts(corpus, ids).items()}
