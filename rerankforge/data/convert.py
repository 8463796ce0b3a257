"""Converters from the training-data formats users already have into training groups.

Each converter is a function returning an iterator of :class:`Group`; :data:`CONVERTERS` maps
the format names the ``convert`` command accepts to them. Malformed input raises
:class:`DataFormatError` naming the file and line (or, for Parquet and Arrow input, the
0-based row).

**Stable ids.** Formats that carry only text get ids derived from the text, so the same
query or passage gets the same id in every file, format and run::

    query_id = "q" + sha1(query.encode("utf-8")).hexdigest()[:16]
    doc_id   = "d" + sha1(passage.encode("utf-8")).hexdigest()[:16]

The text is hashed exactly as read (no case or whitespace folding): equal ids mean equal
bytes. 64 bits keep the chance of any collision among 10M passages below 1e-5.

**Grouping.** Row formats (MS MARCO triples, sentence-transformers rows) repeat a query on
many rows; they give one group per distinct query. That holds every distinct passage text in
memory once; for inputs larger than memory, sort the file by query and pass
``sorted_input=True`` to stream one group at a time. A passage listed as both positive and
negative for one query is kept once, with the higher label (a mined false negative is still
a positive); the first teacher score seen for a passage is kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from rerankforge.data.groups import Candidate, Group
from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.utils.io import iter_jsonl, iter_lines

log = logging.getLogger(__name__)


def query_id_for(text: str) -> str:
    return "q" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def doc_id_for(text: str) -> str:
    return "d" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class _Where:
    """Names a position in the input: a line for text files, a 0-based row for Arrow-like input."""

    def __init__(self, path, line: int | None = None, row: int | None = None):
        self.path, self.line, self.row = str(path), line, row

    def error(self, message: str) -> DataFormatError:
        if self.line is None and self.row is not None:
            return DataFormatError(self.path, None, f"row {self.row}: {message}")
        return DataFormatError(self.path, self.line, message)


class _Grouper:
    """Folds (query, passage, label, teacher) rows into one group per distinct query."""

    def __init__(self, sorted_input: bool):
        self.sorted_input = sorted_input
        self.open: dict[str, tuple[str, dict[str, Candidate]]] = {}
        self.closed: set[str] = set()
        self.texts: dict[str, str] = {}

    def add(self, where: _Where, qid: str, query: str, doc_id: str, text: str | None,
            label: float | None, teacher: float | None) -> Iterator[Group]:
        """Add one candidate; in sorted mode yields the previous group once its query ends."""
        if self.sorted_input and qid not in self.open:
            if qid in self.closed:
                raise where.error(f"query {query!r} appears again after other queries: the input is not "
                                  "sorted by query (sort it, or convert without sorted_input)")
            yield from self.finish()
        entry = self.open.get(qid)
        if entry is None:
            entry = self.open[qid] = (query, {})
        cands = entry[1]
        cand = cands.get(doc_id)
        if cand is None:
            if text is not None and not self.sorted_input:
                # One string object per distinct passage, however many queries list it.
                text = self.texts.setdefault(doc_id, text)
            cands[doc_id] = Candidate(doc_id, text, label, teacher)
            return
        if label is not None and (cand.label is None or label > cand.label):
            cand.label = label
        if cand.teacher is None:
            cand.teacher = teacher

    def finish(self) -> Iterator[Group]:
        for qid, (query, cands) in self.open.items():
            if self.sorted_input:
                self.closed.add(qid)
            yield Group(qid, query, list(cands.values()))
        self.open = {}


def _text(where: _Where, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"{what} must be a non-empty string, got {value!r}")
    return value


def _number(where: _Where, value: Any, what: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise where.error(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise where.error(f"{what} must be a number, got {value!r}")
    return float(value)


# --- MS MARCO triples ---------------------------------------------------------------------

def read_id_text_tsv(path: str | Path) -> dict[str, str]:
    """``id<TAB>text`` per line (MS MARCO ``queries.*.tsv``, ``collection.tsv``)."""
    table: dict[str, str] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip():
            raise DataFormatError(path, lineno, f"expected id<TAB>text, got {len(parts)} field(s)")
        table[parts[0].strip()] = parts[1]
    return table


def _table(value: Mapping[str, str] | str | Path | None) -> Mapping[str, str] | None:
    if value is None or isinstance(value, Mapping):
        return value
    return read_id_text_tsv(value)


def msmarco_triples(path: str | Path, *, queries: Mapping[str, str] | str | Path | None = None,
                    collection: Mapping[str, str] | str | Path | None = None,
                    sorted_input: bool = False) -> Iterator[Group]:
    """MS MARCO ``triples.train.*.tsv``: ``query<TAB>positive<TAB>negative`` per line.

    Positives get label 1, negatives 0, ids from :func:`query_id_for` / :func:`doc_id_for`.
    With ``queries`` (a ``qid<TAB>text`` file or mapping) the lines are read in the id form
    ``qid<TAB>pid<TAB>pid`` (``triples.train.ids.small.tsv``) and the MS MARCO ids are kept;
    ``collection`` (``pid<TAB>passage``) adds passage texts, without it candidates carry only
    ids, to be resolved later against a collection like any text-free group. Both tables
    are read into memory (a mapping can be passed instead of a file).
    """
    query_text, passages = _table(queries), _table(collection)
    if passages is not None and query_text is None:
        raise ConfigError("msmarco-triples: a collection is only used with the id form, which needs queries too")
    grouper = _Grouper(sorted_input)
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        where = _Where(path, lineno)
        parts = line.split("\t")
        if len(parts) != 3:
            raise where.error(f"expected 3 tab-separated fields (query, positive, negative), got {len(parts)}")
        if query_text is None:
            query, pos, neg = (_text(where, p, name) for p, name in zip(parts, ("query", "positive", "negative")))
            qid, rows = query_id_for(query), ((doc_id_for(pos), pos, 1.0), (doc_id_for(neg), neg, 0.0))
        else:
            qid, pos_id, neg_id = (p.strip() for p in parts)
            if qid not in query_text:
                raise where.error(f"query id {qid!r} is not in the queries file")
            query = _text(where, query_text[qid], f"text of query {qid!r}")
            rows = tuple((pid, _passage(where, passages, pid), label) for pid, label in ((pos_id, 1.0), (neg_id, 0.0)))
        for doc_id, text, label in rows:
            yield from grouper.add(where, qid, query, doc_id, text, label, None)
    yield from grouper.finish()


def _passage(where: _Where, passages: Mapping[str, str] | None, pid: str) -> str | None:
    if not pid:
        raise where.error("empty passage id")
    if passages is None:
        return None
    if pid not in passages:
        raise where.error(f"passage id {pid!r} is not in the collection")
    return passages[pid]


# --- FlagEmbedding ------------------------------------------------------------------------

_FLAG_KEYS = ("query", "pos", "neg", "pos_scores", "neg_scores")


def flagembedding(path: str | Path) -> Iterator[Group]:
    """FlagEmbedding reranker/embedder JSONL: ``{"query", "pos": [...], "neg": [...],
    "pos_scores"?, "neg_scores"?, "prompt"?, ...}``, one group per line.

    Scores become ``teacher`` (FlagEmbedding's distillation targets); any other key
    (``prompt``, ``type``) is kept in ``meta``. A line is FlagEmbedding's training unit, so
    lines are not merged: a query on a second line gets ``<query_id>.2`` (then ``.3``...) to
    keep query ids unique in the output.
    """
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        where = _Where(path, lineno)
        for key in ("query", "pos", "neg"):
            if key not in obj:
                raise where.error(f'missing "{key}"')
        query = _text(where, obj["query"], '"query"')
        cands: dict[str, Candidate] = {}
        for kind, label in (("pos", 1.0), ("neg", 0.0)):
            texts, scores = obj[kind], obj.get(f"{kind}_scores")
            if not isinstance(texts, list):
                raise where.error(f'"{kind}" must be a list of strings')
            if scores is not None and (not isinstance(scores, list) or len(scores) != len(texts)):
                raise where.error(f'"{kind}_scores" must be a list as long as "{kind}" ({len(texts)})')
            for k, text in enumerate(texts):
                text = _text(where, text, f'"{kind}"[{k}]')
                teacher = None if scores is None else _number(where, scores[k], f'"{kind}_scores"[{k}]')
                cands.setdefault(doc_id_for(text), Candidate(doc_id_for(text), text, label, teacher))
        if not any(c.label for c in cands.values()):
            raise where.error('"pos" is empty: a group needs at least one positive')
        qid = query_id_for(query)
        seen[qid] = seen.get(qid, 0) + 1
        if seen[qid] > 1:
            qid = f"{qid}.{seen[qid]}"
        meta = {k: v for k, v in obj.items() if k not in _FLAG_KEYS}
        yield Group(qid, query, list(cands.values()), meta)


# --- sentence-transformers hard negatives -------------------------------------------------

_NEGATIVE = re.compile(r"negatives?(?:_(\d+))?$")


def _layout(where: _Where, columns: Iterable[str], query_column: str | None, positive_column: str) -> dict[str, Any]:
    columns = list(columns)
    query = query_column or next((c for c in ("query", "anchor") if c in columns), None)
    if query is None or query not in columns:
        raise where.error(f"no query column ({query_column or 'query or anchor'}) among {columns}")
    if positive_column not in columns:
        raise where.error(f"no positive column {positive_column!r} among {columns}")
    negatives = sorted((c for c in columns if _NEGATIVE.match(c)),
                       key=lambda c: int(_NEGATIVE.match(c).group(1) or 0))
    known = {query, positive_column, *negatives, *_SCORE_COLUMNS}
    extra = [c for c in columns if c not in known]
    return {"query": query, "positive": positive_column, "negatives": negatives, "extra": extra}


_SCORE_COLUMNS = ("label", "labels", "score", "scores")


def _st_rows(source: Any) -> Iterator[tuple[_Where, dict[str, Any]]]:
    """Rows of a JSONL/CSV/TSV/Parquet file, a save_to_disk directory or a Dataset."""
    if hasattr(source, "column_names") and hasattr(source, "iter"):
        files = getattr(source, "cache_files", None)
        yield from _arrow_rows(files[0]["filename"] if files else "<dataset>", source.iter(batch_size=1024))
        return
    path = Path(source)
    name = path.name.lower().removesuffix(".gz")
    if path.is_dir():
        from datasets import Dataset

        yield from _st_rows(Dataset.load_from_disk(str(path)))
    elif name.endswith((".jsonl", ".json")):
        for lineno, obj in iter_jsonl(path):
            yield _Where(path, lineno), obj
    elif name.endswith((".csv", ".tsv")):
        yield from _csv_rows(path, "\t" if name.endswith(".tsv") else ",")
    elif name.endswith(".parquet"):
        import pyarrow
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except pyarrow.ArrowException as err:
            raise DataFormatError(path, None, f"not a readable Parquet file ({err})") from None
        yield from _arrow_rows(path, (b.to_pydict() for b in parquet.iter_batches(batch_size=1024)))
    else:
        raise ConfigError(f"{path}: unknown file type (expected .jsonl, .csv, .tsv, .parquet or a dataset directory)")


def _arrow_rows(path, batches: Iterable[dict[str, list]]) -> Iterator[tuple[_Where, dict[str, Any]]]:
    row = 0
    for batch in batches:
        keys = list(batch)
        for values in zip(*batch.values()):
            yield _Where(path, row=row), dict(zip(keys, values))
            row += 1


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[_Where, dict[str, Any]]]:
    # Lines come from iter_lines so that invalid UTF-8 names its exact line, which a buffered
    # text decoder cannot; csv still joins quoted fields that span lines.
    reader = csv.reader((line + "\n" for _, line in iter_lines(path)), delimiter=delimiter)
    try:
        header = next(reader, None)
        start = reader.line_num + 1
        for values in reader:
            where = _Where(path, start)
            start = reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise where.error(f"{len(values)} fields, the header has {len(header)}")
            yield where, dict(zip(header, values))
    except csv.Error as err:
        raise DataFormatError(path, reader.line_num, f"CSV: {err}") from None


def _texts(where: _Where, value: Any, col: str) -> list[str]:
    if isinstance(value, list):
        return [_text(where, v, f"{col!r}[{k}]") for k, v in enumerate(value)]
    return [_text(where, value, repr(col))]


def _numbers(where: _Where, value: Any, col: str) -> list[float]:
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)  # a list column written to CSV
        except json.JSONDecodeError:
            raise where.error(f"{col!r} is not a valid JSON list") from None
    if isinstance(value, list):
        return [_number(where, v, f"{col!r}[{k}]") for k, v in enumerate(value)]
    return [_number(where, value, repr(col))]


def st_hardneg(source: Any, *, query_column: str | None = None, positive_column: str = "positive",
               sorted_input: bool = False) -> Iterator[Group]:
    """sentence-transformers (hard-negative) training data, one group per distinct query.

    Columns as ``mine_hard_negatives`` writes them: a query (``query`` or ``anchor``), a
    ``positive`` and negatives ``negative`` or ``negative_1..negative_n`` (a negative cell may
    also hold a list; an empty one is skipped). Positives get label 1, negatives 0; a
    ``scores`` list (positive first, from ``output_scores=True``) becomes ``teacher``. Rows
    without negatives are pairs or lists (``labeled-pair``/``labeled-list``): ``label(s)``
    give each passage's label, ``score(s)`` its teacher score; with scores but no labels the
    labels are unknown (``None``), since that column mixes positives and negatives. A scalar
    ``label``/``score`` on a row with negatives is refused: it is usually a margin.
    ``source`` is a ``.jsonl``/``.csv``/``.tsv``/``.parquet`` file (``.gz`` for text files),
    a ``save_to_disk`` directory or a ``datasets.Dataset``.
    """
    grouper, layouts = _Grouper(sorted_input), {}
    for where, row in _st_rows(source):
        key = tuple(row)
        layout = layouts.get(key)
        if layout is None:
            layout = layouts[key] = _layout(where, key, query_column, positive_column)
            if layout["extra"]:
                log.warning("%s: ignoring columns %s", where.path, layout["extra"])
        query = _text(where, row[layout["query"]], repr(layout["query"]))
        qid = query_id_for(query)
        for text, label, teacher in _st_candidates(where, row, layout):
            yield from grouper.add(where, qid, query, doc_id_for(text), text, label, teacher)
    yield from grouper.finish()


def _st_candidates(where: _Where, row: dict[str, Any], layout: dict[str, Any]) -> list[tuple]:
    passages = _texts(where, row[layout["positive"]], layout["positive"])
    n_pos = len(passages)
    for col in layout["negatives"]:
        if row[col] is not None and row[col] != "":
            passages += _texts(where, row[col], col)
    present = [c for c in _SCORE_COLUMNS if row.get(c) is not None]
    if layout["negatives"] and set(present) & {"label", "labels", "score"}:
        raise where.error('a "label"/"score" column on rows with negatives is ambiguous (a margin?); '
                          'use "scores", one per passage, or drop the column')
    label_col = next((c for c in present if c.startswith("label")), None)
    score_col = next((c for c in present if c.startswith("score")), None)
    if label_col:
        labels: list = _numbers(where, row[label_col], label_col)
    elif score_col and not layout["negatives"]:
        labels = [None] * len(passages)
    else:
        labels = [1.0] * n_pos + [0.0] * (len(passages) - n_pos)
    teachers = _numbers(where, row[score_col], score_col) if score_col else [None] * len(passages)
    if len(labels) != len(passages) or len(teachers) != len(passages):
        raise where.error(f"{len(passages)} passage(s) but {len(labels)} label(s) and {len(teachers)} score(s)")
    return list(zip(passages, labels, teachers))


CONVERTERS: dict[str, Callable[..., Iterator[Group]]] = {
    "msmarco-triples": msmarco_triples,
    "flagembedding": flagembedding,
    "st-hardneg": st_hardneg,
}


def convert(fmt: str, source: Any, **options: Any) -> Iterator[Group]:
    """Groups from ``source`` in format ``fmt`` (a key of :data:`CONVERTERS`)."""
    if fmt not in CONVERTERS:
        raise ConfigError(f"unknown input format {fmt!r}; known: {', '.join(sorted(CONVERTERS))}")
    return CONVERTERS[fmt](source, **options)
