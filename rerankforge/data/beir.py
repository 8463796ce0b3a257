"""BEIR collections: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``.

The corpus is held once, as parallel lists of ids and texts (title and body joined), with an
id -> row index map; everything else (runs, groups, retrievers) refers to documents by id or row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from rerankforge.errors import DataFormatError
from rerankforge.utils.io import iter_jsonl, iter_lines

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


def doc_text(title: str | None, text: str | None) -> str:
    """The text every model and retriever sees: title and body joined by a space."""
    title = (title or "").strip()
    text = (text or "").strip()
    return f"{title} {text}" if title and text else title or text


@dataclass
class Corpus:
    """Documents as parallel ``ids``/``texts`` lists; ``empty_ids`` are the empty documents dropped
    on reading (kept so qrels that judge them can be told apart from unknown ids)."""

    ids: list[str]
    texts: list[str]
    empty_ids: frozenset[str] = frozenset()
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {d: i for i, d in enumerate(self.ids)}

    @property
    def skipped_empty(self) -> int:
        return len(self.empty_ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self.index

    def text(self, doc_id: str) -> str:
        return self.texts[self.index[doc_id]]


def _require_id(obj: dict, path, lineno: int) -> str:
    if "_id" not in obj:
        raise DataFormatError(path, lineno, 'missing "_id"')
    value = obj["_id"]
    if not isinstance(value, (str, int)) or str(value) == "":
        raise DataFormatError(path, lineno, f'"_id" must be a non-empty string, got {value!r}')
    return str(value)


def load_corpus(path: str | Path) -> Corpus:
    """Read a BEIR corpus. Duplicate ids and missing ids are errors; documents whose title and
    text are both empty are skipped and counted (``Corpus.skipped_empty``) because they can
    never be retrieved or scored meaningfully."""
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    skipped: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        doc_id = _require_id(obj, path, lineno)
        if doc_id in seen:
            raise DataFormatError(path, lineno, f"duplicate document id {doc_id!r} (first on line {seen[doc_id]})")
        seen[doc_id] = lineno
        for key in ("title", "text"):
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise DataFormatError(path, lineno, f'"{key}" must be a string')
        text = doc_text(obj.get("title"), obj.get("text"))
        if not text:
            skipped.add(doc_id)
            continue
        ids.append(doc_id)
        texts.append(text)
    if skipped:
        log.warning("%s: skipped %d documents with empty title and text", path, len(skipped))
    if not ids:
        raise DataFormatError(path, None, "corpus has no documents")
    return Corpus(ids, texts, empty_ids=frozenset(skipped))


def load_queries(path: str | Path) -> dict[str, str]:
    """Read ``queries.jsonl`` into ``{query_id: text}``; missing/duplicate ids and empty texts are errors."""
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        qid = _require_id(obj, path, lineno)
        if qid in queries:
            raise DataFormatError(path, lineno, f"duplicate query id {qid!r} (first on line {lines[qid]})")
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(path, lineno, f"query {qid!r} has an empty or missing text")
        queries[qid] = text.strip()
        lines[qid] = lineno
    return queries


def load_qrels(
    path: str | Path,
    queries: dict[str, str] | None = None,
    corpus: Corpus | None = None,
) -> Qrels:
    """Read qrels: BEIR TSV (``query-id corpus-id score``, optional header) or TREC
    (``qid iter docid rel``). Unknown query or document ids are errors when ``queries`` /
    ``corpus`` are given; judgments of documents the corpus skipped as empty are dropped with a
    warning (Cranfield judges two empty documents), since no system can retrieve them."""
    qrels: Qrels = {}
    dropped = 0
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if lineno == 1 and parts and parts[0].lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) == 3:
            qid, did, rel = parts
        elif len(parts) == 4:
            qid, _, did, rel = parts
        else:
            raise DataFormatError(path, lineno, f"expected 3 (BEIR) or 4 (TREC) fields, got {len(parts)}")
        try:
            grade = int(float(rel))
        except ValueError:
            raise DataFormatError(path, lineno, f"relevance {rel!r} is not a number") from None
        if queries is not None and qid not in queries:
            raise DataFormatError(path, lineno, f"unknown query id {qid!r}")
        if corpus is not None and did not in corpus:
            if did in corpus.empty_ids:
                dropped += 1
                continue
            raise DataFormatError(path, lineno, f"unknown document id {did!r}")
        qrels.setdefault(qid, {})[did] = grade
    if dropped:
        log.warning("%s: dropped %d judgments of documents skipped as empty", path, dropped)
    return qrels


def collection_file(root: Path, name: str) -> Path:
    """``root/name``, or its gzipped form ``root/name.gz``."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{root}: no {name} or {name}.gz")


class Collection:
    """A BEIR collection directory, loaded lazily (the corpus is read once, on first use)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"collection directory {self.root} does not exist")
        self._qrels: dict[str, Qrels] = {}

    @cached_property
    def corpus(self) -> Corpus:
        return load_corpus(collection_file(self.root, "corpus.jsonl"))

    @cached_property
    def queries(self) -> dict[str, str]:
        return load_queries(collection_file(self.root, "queries.jsonl"))

    def splits(self) -> list[str]:
        return sorted(p.name.split(".")[0] for p in (self.root / "qrels").glob("*.tsv*"))

    def qrels(self, split: str) -> Qrels:
        if split not in self._qrels:
            path = self.root / "qrels" / f"{split}.tsv"
            if not path.exists():
                raise FileNotFoundError(f"{path} not found; splits here: {', '.join(self.splits()) or 'none'}")
            self._qrels[split] = load_qrels(path, self.queries, self.corpus)
        return self._qrels[split]

    def split_queries(self, split: str) -> dict[str, str]:
        """Queries that have judgments in ``split``, in qrels order."""
        return {qid: self.queries[qid] for qid in self.qrels(split)}
