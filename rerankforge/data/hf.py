"""Training groups as a Hugging Face ``datasets.Dataset``: Arrow on disk, memory-mapped.

A groups JSONL must be parsed in full before training can index into it; an Arrow copy is
memory-mapped, so a run over millions of groups costs page cache, not Python heap, and any
row can be read in O(1). One row is one group; ``candidates`` is a list of structs whose
optional fields are nullable (``None`` survives the round trip); ``meta`` is a JSON string
because its keys differ from group to group and Arrow structs need one fixed set of keys.

Rows are decoded back into :class:`Group` one at a time by :class:`GroupsView`, through
:func:`parse_group`, so an Arrow file written by other tools is held to the same rules as a
JSONL file, with the row index in place of the line number.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, Features, List, Value

from rerankforge.data.groups import Group, iter_groups, parse_group
from rerankforge.errors import ConfigError, DataFormatError

# Bump when the column layout changes so cached Arrow copies of JSONL files are rebuilt.
_LAYOUT = "2"
_CANDIDATE_TYPES = {"doc_id": "string", "text": "string", "label": "float64", "teacher": "float64",
                    "rank": "int64", "score": "float64", "propensity": "float64", "weight": "float64",
                    "views": "list", "clicks": "list"}
_REQUIRED = ("query_id", "query", "candidates")
_ITER_BATCH = 256


def groups_features() -> Features:
    """The Arrow schema of a group row. Floats are float64 so values come back bit-identical."""
    candidate = {name: List(Value("float64")) if dtype == "list" else Value(dtype)
                 for name, dtype in _CANDIDATE_TYPES.items()}
    return Features({"query_id": Value("string"), "query": Value("string"),
                     "candidates": List(candidate), "meta": Value("string")})


def _row(group: Group) -> dict[str, Any]:
    cands = [{name: getattr(c, name) for name in _CANDIDATE_TYPES} for c in group.candidates]
    meta = json.dumps(group.meta, ensure_ascii=False) if group.meta else None
    return {"query_id": group.query_id, "query": group.query, "candidates": cands, "meta": meta}


def _rows(groups: Iterator[Group]) -> Iterator[dict[str, Any]]:
    for group in groups:
        yield _row(group)


def groups_to_dataset(groups: Iterable[Group], *, cache_dir: str | os.PathLike | None = None,
                      fingerprint: str | None = None) -> Dataset:
    """Write ``groups`` into an Arrow cache file and return it memory-mapped.

    Built through ``Dataset.from_generator`` so groups stream to disk instead of collecting in
    a list. ``fingerprint`` names the cache entry; the default is a fresh random one because
    datasets would otherwise hash the generator, and equal hashes for different data would
    silently return a stale cache. An error raised while reading the groups (e.g. a
    :class:`DataFormatError` naming a line) is re-raised as is, not wrapped by datasets.
    """
    it = iter(groups)
    first = next(it, None)
    if first is None:
        # from_generator cannot build a split with no rows.
        return Dataset.from_dict({name: [] for name in groups_features()}, features=groups_features())
    try:
        return Dataset.from_generator(
            _rows, features=groups_features(), gen_kwargs={"groups": chain([first], it)},
            cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=fingerprint or uuid.uuid4().hex)
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, (DataFormatError, ConfigError)):
            raise err.__cause__ from None
        raise


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def save_groups_dataset(groups_or_dataset: Iterable[Group] | Dataset, path: str | os.PathLike) -> int:
    """``save_to_disk`` into a temporary sibling of ``path``, then rename it into place.

    A failure at any point (a bad input line, a full disk) leaves the previous dataset at
    ``path`` (or nothing) and no temporary directory behind. Groups are first written to an
    Arrow cache inside that temporary directory, so no copy is left in the global HF cache.
    Refuses to replace a directory that is not a saved dataset. Returns the number of groups.
    """
    path = Path(path)
    if path.exists() and not (path.is_dir() and (_is_saved_dataset(path) or not any(path.iterdir()))):
        raise ConfigError(f"{path} exists and is not a saved dataset; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Deterministic: a save killed before its ``finally`` (SIGKILL) leaves this directory, and the
    # next save of the same path removes it -- after putting back a previous dataset moved into it.
    work = path.parent / f".{path.name}.tmp-rerankforge"
    if work.exists():
        if (work / "previous").exists() and not path.exists():
            (work / "previous").rename(path)
        shutil.rmtree(work)
    work.mkdir()
    try:
        if isinstance(groups_or_dataset, Dataset):
            dataset = groups_or_dataset
            _check_columns(dataset, str(path))
        else:
            dataset = groups_to_dataset(groups_or_dataset, cache_dir=work / "cache")
        # With no rows datasets writes zero shards, which load_from_disk then cannot read.
        dataset.save_to_disk(str(work / "dataset"), num_shards=1 if dataset.num_rows == 0 else None)
        n = dataset.num_rows
        del dataset
        if path.exists():
            path.rename(work / "previous")
        try:
            (work / "dataset").rename(path)
        except BaseException:
            if (work / "previous").exists():
                (work / "previous").rename(path)
            raise
        return n
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _jsonl_fingerprint(path: Path) -> str:
    # Path, size and mtime identify the file's content well enough to reuse the Arrow cache
    # when the same file is loaded again, and to rebuild it when the file is rewritten.
    st = path.stat()
    key = f"{_LAYOUT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return "groups-" + hashlib.sha256(key.encode()).hexdigest()[:20]


def load_groups_dataset(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """A memory-mapped Dataset from a ``save_to_disk`` directory or a groups JSONL (``.gz`` too).

    A JSONL file goes through datasets' generator builder rather than its JSON builder: each
    line is validated by :func:`parse_group` (errors name ``file:line``) and ``meta`` becomes
    the JSON string column, which the JSON builder cannot do for heterogeneous ``meta``
    objects. The Arrow cache is keyed on the file's path, size and mtime, so loading the same
    unchanged file again is a memory map, not a second parse.
    """
    path = Path(path)
    if path.is_dir():
        if not _is_saved_dataset(path):
            raise DataFormatError(path, None, "not a datasets save_to_disk directory (no state.json)")
        dataset = Dataset.load_from_disk(str(path))
        _check_columns(dataset, str(path))
        return dataset
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return groups_to_dataset(iter_groups(path), cache_dir=cache_dir, fingerprint=_jsonl_fingerprint(path))


def _candidate_fields(dataset: Dataset, source: str) -> tuple[frozenset[str], bool]:
    """The candidate struct's field names and whether it is stored column-wise (the legacy
    ``Sequence({...})`` layout, a dict of lists per row)."""
    feature = dataset.features["candidates"]
    if isinstance(feature, dict):
        return frozenset(feature), True
    inner = getattr(feature, "feature", None)
    if isinstance(inner, dict):
        return frozenset(inner), False
    raise DataFormatError(source, None, f'column "candidates" must be a list of structs, got {feature}')


def _check_columns(dataset: Dataset, source: str) -> None:
    missing = [c for c in _REQUIRED if c not in dataset.column_names]
    if missing:
        raise DataFormatError(source, None, f"dataset has no column(s) {missing} (columns: {dataset.column_names})")
    fields, _ = _candidate_fields(dataset, source)
    if "doc_id" not in fields:
        raise DataFormatError(source, None, 'candidate structs have no "doc_id" field')
    unknown = fields - set(_CANDIDATE_TYPES)
    if unknown:
        raise DataFormatError(source, None, f"candidate structs have unknown fields {sorted(unknown)}")


def _source_of(dataset: Dataset) -> str:
    files = dataset.cache_files
    return files[0]["filename"] if files else "<dataset>"


class GroupsView(Sequence):
    """A read-only ``Sequence[Group]`` over a Dataset, decoding a row only when it is asked for.

    Nothing is decoded or validated up front beyond the column names (cheap, from the schema),
    so opening a view over millions of rows costs nothing and a bad row surfaces when it is
    read, as ``DataFormatError("<source>", None, "row i: ...")``. Optional candidate fields and
    the ``meta`` column may be absent from the Dataset; they read as ``None`` / ``{}``.
    """

    def __init__(self, dataset: Dataset, source: str | None = None):
        self._source = source or _source_of(dataset)
        _check_columns(dataset, self._source)
        self._columnar = _candidate_fields(dataset, self._source)[1]
        # Any other format (torch, numpy) would hand back tensors instead of Python values.
        self._dataset = dataset if dataset.format["type"] is None else dataset.with_format(None)
        self._columns = [c for c in ("schema", *_REQUIRED, "meta") if c in dataset.column_names]

    @property
    def dataset(self) -> Dataset:
        return self._dataset

    def __len__(self) -> int:
        return self._dataset.num_rows

    def head(self, n: int) -> GroupsView:
        """The first ``n`` groups, still lazy (``dataset.select``; no rows are decoded)."""
        return GroupsView(self._dataset.select(range(min(n, len(self)))), self._source)

    def __getitem__(self, index):
        n = len(self)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(n))]
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"GroupsView indices must be integers or slices, not {type(index).__name__}")
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"group index {index} out of range for {n} groups")
        return self._decode(self._dataset[i], i)

    def __iter__(self) -> Iterator[Group]:
        # Batched reads: one Arrow slice per batch instead of one query per row.
        i = 0
        for batch in self._dataset.select_columns(self._columns).iter(batch_size=_ITER_BATCH):
            for k in range(len(batch["query_id"])):
                yield self._decode({c: batch[c][k] for c in self._columns}, i)
                i += 1

    def _decode(self, row: dict[str, Any], i: int) -> Group:
        try:
            return parse_group(self._to_obj(row), self._source, i)
        except DataFormatError as err:
            raise DataFormatError(self._source, None, f"row {i}: {err.message}") from None

    def _to_obj(self, row: dict[str, Any]) -> dict[str, Any]:
        # Arrow nulls become absent keys, which is how parse_group reads optional fields.
        obj = {k: row[k] for k in ("schema", *_REQUIRED) if row.get(k) is not None}
        cands = obj.get("candidates")
        if self._columnar and isinstance(cands, dict):
            keys = list(cands)
            cands = [dict(zip(keys, values)) for values in zip(*cands.values())]
        if isinstance(cands, list):
            obj["candidates"] = [{k: v for k, v in c.items() if v is not None} if isinstance(c, dict) else c
                                 for c in cands]
        meta = row.get("meta")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except json.JSONDecodeError as err:
                raise DataFormatError(self._source, None, f"meta is not valid JSON ({err.msg})") from None
        if meta is not None and not isinstance(meta, dict):
            raise DataFormatError(self._source, None, f"meta must be a JSON object, got {type(meta).__name__}")
        if meta:
            obj["meta"] = meta
        return obj
