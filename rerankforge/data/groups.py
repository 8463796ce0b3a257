"""Training groups: the one record that mining writes, labelling enriches and training reads.

One JSON object per line::

    {"schema": "rerankforge.group/1", "query_id": "q1", "query": "text",
     "candidates": [{"doc_id": "d7", "text": "...", "label": 1.0, "teacher": 3.2,
                     "rank": 4, "score": 17.1, "propensity": 0.5, "weight": 2.0}, ...],
     "meta": {...}}

Only ``doc_id`` is required per candidate; ``label`` is a graded relevance (``null`` =
unjudged), ``teacher`` a teacher model's score, ``rank``/``score`` the first-stage position
(1-based) and score, ``propensity`` the examination probability of a clicked position and
``weight`` a per-candidate loss weight (e.g. inverse propensity). Click-derived groups may also
carry ``views`` and ``clicks``: how often the document was shown, and clicked, at each rank
(``views[r-1]`` at rank r) — the sufficient statistics of a position-based click model, which the
learned-bias losses (``two_tower``, ``dla``, ``trust_bias``) fit without one group per impression.
Candidate order carries no meaning: positives can sit anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rerankforge.errors import DataFormatError
from rerankforge.utils.io import atomic_write, iter_jsonl

SCHEMA = "rerankforge.group/1"
_OPTIONAL_FLOATS = ("label", "teacher", "score", "propensity", "weight")
_COUNT_LISTS = ("views", "clicks")


@dataclass
class Candidate:
    doc_id: str
    text: str | None = None
    label: float | None = None
    teacher: float | None = None
    rank: int | None = None
    score: float | None = None
    propensity: float | None = None
    weight: float | None = None
    #: per-rank impressions / clicks of this document (index r-1 = rank r), from a click log
    views: list[float] | None = None
    clicks: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        # Direct attribute reads: dataclasses.asdict deep-copies and was a third of mining CPU at 1M.
        return {k: v for k in _CANDIDATE_FIELDS if (v := getattr(self, k)) is not None}


_CANDIDATE_FIELDS = tuple(f.name for f in fields(Candidate))


@dataclass
class Group:
    query_id: str
    query: str
    candidates: list[Candidate]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj = {"schema": SCHEMA, "query_id": self.query_id, "query": self.query,
               "candidates": [c.to_json() for c in self.candidates]}
        if self.meta:
            obj["meta"] = self.meta
        return obj

    @property
    def positives(self) -> list[Candidate]:
        return [c for c in self.candidates if c.label is not None and c.label > 0]


def _parse_candidate(raw: Any, path, lineno: int, k: int) -> Candidate:
    if not isinstance(raw, dict):
        raise DataFormatError(path, lineno, f"candidate {k} is not an object")
    if "doc_id" not in raw or str(raw["doc_id"]) == "":
        raise DataFormatError(path, lineno, f'candidate {k} has no "doc_id"')
    unknown = set(raw) - {"doc_id", "text", "rank", *_OPTIONAL_FLOATS, *_COUNT_LISTS}
    if unknown:
        raise DataFormatError(path, lineno, f"candidate {k} has unknown fields {sorted(unknown)}")
    values: dict[str, Any] = {"doc_id": str(raw["doc_id"])}
    text = raw.get("text")
    if text is not None:
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(path, lineno, f"candidate {k} ({values['doc_id']}) has an empty text")
        values["text"] = text
    for key in _OPTIONAL_FLOATS:
        v = raw.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise DataFormatError(path, lineno, f"candidate {k} field {key!r} must be a number, got {v!r}")
        values[key] = float(v)
    if raw.get("rank") is not None:
        if not isinstance(raw["rank"], int) or raw["rank"] < 1:
            raise DataFormatError(path, lineno, f"candidate {k} rank must be a positive integer")
        values["rank"] = raw["rank"]
    for key in _COUNT_LISTS:
        v = raw.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                              and math.isfinite(x) and x >= 0 for x in v):
            raise DataFormatError(path, lineno, f"candidate {k} field {key!r} must be a list of counts >= 0")
        values[key] = [float(x) for x in v]
    if ("views" in values) != ("clicks" in values):
        raise DataFormatError(path, lineno, f'candidate {k} has only one of "views" / "clicks" (give both)')
    if "views" in values:
        if len(values["views"]) != len(values["clicks"]):
            raise DataFormatError(path, lineno, f'candidate {k}: "views" and "clicks" have different lengths')
        if any(c > v for c, v in zip(values["clicks"], values["views"])):
            raise DataFormatError(path, lineno, f"candidate {k}: more clicks than views at some rank")
    return Candidate(**values)


def parse_group(obj: dict[str, Any], path="<memory>", lineno: int = 0) -> Group:
    schema = obj.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise DataFormatError(path, lineno, f"unsupported schema {schema!r} (this version reads {SCHEMA!r})")
    for key in ("query_id", "query", "candidates"):
        if key not in obj:
            raise DataFormatError(path, lineno, f'missing "{key}"')
    if not isinstance(obj["query"], str) or not obj["query"].strip():
        raise DataFormatError(path, lineno, "empty query text")
    if not isinstance(obj["candidates"], list) or not obj["candidates"]:
        raise DataFormatError(path, lineno, '"candidates" must be a non-empty list')
    cands = [_parse_candidate(c, path, lineno, k) for k, c in enumerate(obj["candidates"])]
    ids = [c.doc_id for c in cands]
    if len(set(ids)) != len(ids):
        dup = next(d for d in ids if ids.count(d) > 1)
        raise DataFormatError(path, lineno, f"document {dup!r} appears twice in one group")
    return Group(str(obj["query_id"]), obj["query"], cands, dict(obj.get("meta") or {}))


def iter_groups(path: str | Path) -> Iterator[Group]:
    for lineno, obj in iter_jsonl(path):
        yield parse_group(obj, path, lineno)


def read_groups(path: str | Path) -> list[Group]:
    """Read a groups file; texts repeated across groups share one string object per doc id."""
    interned: dict[str, str] = {}
    groups = []
    for group in iter_groups(path):
        for c in group.candidates:
            if c.text is not None:
                c.text = interned.setdefault(c.doc_id, c.text)
        groups.append(group)
    return groups


def open_groups(source: Any) -> Sequence[Group]:
    """Training groups from what users have: a list of :class:`Group`, a groups JSONL file, a
    directory saved by ``save_groups_dataset`` / ``datasets.Dataset.save_to_disk``, or a
    ``datasets.Dataset`` in the group schema. Datasets stay memory-mapped Arrow (rows are decoded
    one at a time), so an MS MARCO-sized set never sits in Python objects."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            from rerankforge.data.hf import GroupsView, load_groups_dataset

            return GroupsView(load_groups_dataset(path))
        if not path.exists():
            raise FileNotFoundError(f"groups file {path} does not exist")
        return read_groups(path)
    if type(source).__name__ in ("Dataset", "IterableDataset") and hasattr(source, "column_names"):
        from rerankforge.data.hf import GroupsView

        return GroupsView(source)
    if isinstance(source, Sequence) and all(isinstance(g, Group) for g in source[:1]):
        return source
    if isinstance(source, Iterable):
        groups = list(source)
        if all(isinstance(g, Group) for g in groups):
            return groups
    raise TypeError(f"cannot read training groups from {type(source).__name__}: give a list of Group, a groups "
                    f"JSONL path, a saved dataset directory or a datasets.Dataset")


def write_groups(path: str | Path, groups: Iterable[Group]) -> int:
    """Write groups atomically; returns how many were written."""
    import json

    n = 0
    with atomic_write(path) as fh:
        for group in groups:
            fh.write(json.dumps(group.to_json(), ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n
