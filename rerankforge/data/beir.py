"""BEIR collections: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``.

The corpus is held once, as parallel lists of ids and texts (title and body joined), with an
id -> row index map; everything else (runs, groups, retrievers) refers to documents by id or row.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Container, Iterator
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


def iter_corpus_documents(path: str | Path) -> Iterator[tuple[int, str, str, str]]:
    """``(line, doc id, title, body)`` of every corpus line: the one corpus reader behind the
    in-memory corpus, the streaming corpus and the pseudo-query generators. A missing or empty id
    and a title or body that is not a string are errors naming the line."""
    for lineno, obj in iter_jsonl(path):
        doc_id = _require_id(obj, path, lineno)
        fields = []
        for key in ("title", "text"):
            value = obj.get(key)
            if value is not None and not isinstance(value, str):
                raise DataFormatError(path, lineno, f'"{key}" must be a string')
            fields.append(value or "")
        yield lineno, doc_id, fields[0], fields[1]


def load_corpus(path: str | Path) -> Corpus:
    """Read a BEIR corpus. Duplicate ids and missing ids are errors; documents whose title and
    text are both empty are skipped and counted (``Corpus.skipped_empty``) because they can
    never be retrieved or scored meaningfully."""
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    skipped: set[str] = set()
    for lineno, doc_id, title, body in iter_corpus_documents(path):
        if doc_id in seen:
            raise DataFormatError(path, lineno, f"duplicate document id {doc_id!r} (first on line {seen[doc_id]})")
        seen[doc_id] = lineno
        text = doc_text(title, body)
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
    queries: Container[str] | None = None,
    corpus: Container[str] | None = None,
    unknown_docs: str = "error",
) -> Qrels:
    """Read qrels: BEIR TSV (``query-id corpus-id score``, optional header) or TREC
    (``qid iter docid rel``). Grades keep their value (an integer, or a float when fractional);
    a grade that is not a finite number is an error naming the line.

    Unknown query ids are errors when ``queries`` is given. For document ids the corpus lacks
    (when ``corpus`` is given): judgments of documents the corpus skipped as empty are dropped
    with a warning (Cranfield judges two empty documents: no system can retrieve them); other
    unknown documents are an error with ``unknown_docs="error"``, or kept with a warning and a
    count with ``"keep"`` -- official qrels of a partial corpus (e.g. a TREC DL passage subset)
    must be evaluated as they are, since dropping judged documents changes nDCG's ideal ranking."""
    if unknown_docs not in ("error", "keep"):
        raise ValueError(f"unknown_docs must be 'error' or 'keep', got {unknown_docs!r}")
    qrels: Qrels = {}
    dropped = kept_unknown = 0
    empty = getattr(corpus, "empty_ids", ())
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
        grade = _grade(rel, path, lineno)
        if queries is not None and qid not in queries:
            raise DataFormatError(path, lineno, f"unknown query id {qid!r}")
        if corpus is not None and did not in corpus:
            if did in empty:
                dropped += 1
                continue
            if unknown_docs == "error":
                raise DataFormatError(path, lineno, f"unknown document id {did!r}")
            kept_unknown += 1
        qrels.setdefault(qid, {})[did] = grade
    if dropped:
        log.warning("%s: dropped %d judgments of documents skipped as empty", path, dropped)
    if kept_unknown:
        log.warning("%s: %d judgments name documents the corpus does not have; they are kept (evaluation "
                    "uses the qrels as they are: such documents count as never retrieved)", path, kept_unknown)
    return qrels


def _grade(text: str, path, lineno: int) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, lineno, f"relevance {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(path, lineno, f"relevance {text!r} is not a finite number")
    return int(value) if value.is_integer() else value


def collection_file(root: Path, name: str) -> Path:
    """``root/name``, or its gzipped form ``root/name.gz``."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{root}: no {name} or {name}.gz")


def resolve_collection(root: str | Path) -> Path:
    """A collection directory; ``bundled:NAME`` is a collection shipped with the package."""
    text = str(root)
    if text.startswith("bundled:"):
        from rerankforge.resources import bundled_collection

        return bundled_collection(text.split(":", 1)[1])
    return Path(root)


class Collection:
    """A BEIR collection directory: the one collection reader of every step.

    Loaded lazily. ``corpus`` holds every text in memory; ``stream`` reads the corpus file in
    batches and keeps only document ids (retrieval and mining over millions of passages). Qrels
    are checked against whichever of the two is already open (the stream when neither is)."""

    def __init__(self, root: str | Path):
        self.root = resolve_collection(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"collection directory {self.root} does not exist")
        self._qrels: dict[str, Qrels] = {}

    def __repr__(self) -> str:
        return f"Collection({str(self.root)!r})"

    @classmethod
    def of(cls, value: Collection | str | Path) -> Collection:
        return value if isinstance(value, Collection) else cls(value)

    @cached_property
    def corpus(self) -> Corpus:
        return load_corpus(collection_file(self.root, "corpus.jsonl"))

    @cached_property
    def stream(self):
        from rerankforge.retrieve.corpus import CorpusStream

        return CorpusStream(collection_file(self.root, "corpus.jsonl"))

    @property
    def documents(self):
        """The corpus in the form already open: the in-memory corpus, else the stream."""
        return self.__dict__.get("corpus") or self.stream

    @cached_property
    def queries(self) -> dict[str, str]:
        return load_queries(collection_file(self.root, "queries.jsonl"))

    def text(self, doc_id: str) -> str:
        return self.corpus.text(doc_id)

    def splits(self) -> list[str]:
        return sorted({p.name.split(".")[0] for p in (self.root / "qrels").glob("*.tsv*")})

    def qrels_path(self, split: str) -> Path | None:
        for name in (f"{split}.tsv", f"{split}.tsv.gz"):
            if (self.root / "qrels" / name).exists():
                return self.root / "qrels" / name
        return None

    def has_split(self, split: str) -> bool:
        return self.qrels_path(split) is not None

    def qrels(self, split: str) -> Qrels:
        if split not in self._qrels:
            path = self.qrels_path(split)
            if path is None:
                raise FileNotFoundError(f"{self.root / 'qrels' / (split + '.tsv')} not found; splits here: "
                                        f"{', '.join(self.splits()) or 'none'}")
            docs = self.documents
            if not isinstance(docs, Corpus):
                docs.require_ids()
            self._qrels[split] = load_qrels(path, self.queries, _KnownDocs(docs), unknown_docs="keep")
        return self._qrels[split]

    def split_queries(self, split: str) -> dict[str, str]:
        """Queries that have judgments in ``split``, in qrels order."""
        return {qid: self.queries[qid] for qid in self.qrels(split)}


class _KnownDocs:
    """Membership and empty-document ids of an in-memory corpus or a stream, for ``load_qrels``."""

    def __init__(self, docs):
        self.docs = docs
        self.empty_ids = docs.empty_ids

    def __contains__(self, doc_id) -> bool:
        return doc_id in self.docs
