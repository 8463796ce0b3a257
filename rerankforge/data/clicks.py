"""Click logs: one search-result-page impression per JSONL line.

    {"query_id": "q1", "shown": ["d3", "d7", "d1"], "clicks": ["d7"],
     "dwell": {"d7": 42.0}, "session": "s9"}

``query`` (text) may stand in for ``query_id`` or accompany it; ``shown`` lists document ids in
displayed order (rank 1 first); ``clicks`` lists clicked ids (in click order when known; a
document clicked twice in one impression counts once, and the repeat is counted in the stats);
``dwell`` maps clicked ids to seconds; ``session`` is an opaque id. The Yandex WSCD sample in
``shared/datasets/yandex-wscd-click-sample`` is already in this form (ids only, no texts).

Malformed impressions are reported with file and line. In strict mode the first one raises
:class:`DataFormatError`; by default (lenient) each is skipped and counted per reason
(:data:`REASONS`) so the summary says exactly what was dropped and why.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.utils.io import atomic_write, iter_lines

log = logging.getLogger(__name__)

REASONS: dict[str, str] = {
    "invalid_json": "line is not a JSON object",
    "missing_query": 'neither "query" nor "query_id"',
    "bad_field": "a field has the wrong type",
    "empty_shown": '"shown" is empty',
    "duplicate_shown": "a document is shown twice",
    "click_not_shown": "a clicked document is not among the shown ones",
    "unknown_query": "query id not in the collection and no query text",
    "unknown_doc": "a shown document is not in the corpus",
    "bad_dwell": "dwell time is not a non-negative number of a clicked document",
}

#: how many examples per reason are kept for the summary
_EXAMPLES = 3


class _Malformed(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Impression:
    query_id: str
    shown: list[str]
    clicks: list[str]
    query: str | None = None
    dwell: dict[str, float] | None = None
    session: str | None = None
    #: "path:line" of the record, for messages
    source: str = ""

    def clicked(self, min_dwell: float | None = None) -> set[str]:
        """Clicked ids; with ``min_dwell`` only clicks that stayed at least that long.

        A click without a recorded dwell time is kept (it cannot be shown to be a bounce)."""
        if min_dwell is None or not self.dwell:
            return set(self.clicks)
        return {d for d in self.clicks if self.dwell.get(d, math.inf) >= min_dwell}

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"query_id": self.query_id}
        if self.query is not None:
            obj["query"] = self.query
        obj["shown"] = list(self.shown)
        obj["clicks"] = list(self.clicks)
        if self.dwell:
            obj["dwell"] = dict(self.dwell)
        if self.session is not None:
            obj["session"] = self.session
        return obj


@dataclass
class ClickLogStats:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    impressions: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    #: clicks on a document already clicked in the same impression (merged into one)
    repeated_clicks: int = 0
    #: clicks on documents that were not shown, removed with ``unshown_clicks="drop"``
    dropped_clicks: int = 0

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def note(self, reason: str, where: str, message: str) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _EXAMPLES:
            ex.append(f"{where}: {message}")

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "lines": self.lines, "impressions": self.impressions,
                "skipped": dict(self.skipped), "repeated_clicks": self.repeated_clicks,
                "dropped_clicks": self.dropped_clicks, "examples": self.examples}

    def summary(self) -> str:
        parts = [f"{self.impressions} impressions read from {', '.join(self.files)} ({self.lines} lines)"]
        if self.skipped:
            parts.append(f"skipped {self.skipped_total}: " + ", ".join(
                f"{reason} {n}" for reason, n in self.skipped.most_common()))
            for reason in self.skipped:
                for ex in self.examples.get(reason, []):
                    parts.append(f"  e.g. {ex}")
        if self.dropped_clicks:
            parts.append(f"dropped {self.dropped_clicks} clicks on documents that were not shown")
        if self.repeated_clicks:
            parts.append(f"merged {self.repeated_clicks} repeated clicks on the same document")
        return "\n".join(parts)


@dataclass
class ClickLog:
    impressions: list[Impression]
    stats: ClickLogStats

    def __len__(self) -> int:
        return len(self.impressions)

    def by_query(self) -> dict[str, list[Impression]]:
        out: dict[str, list[Impression]] = {}
        for imp in self.impressions:
            out.setdefault(imp.query_id, []).append(imp)
        return out

    @property
    def max_rank(self) -> int:
        return max((len(i.shown) for i in self.impressions), default=0)


def _id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise _Malformed("bad_field", f"{what} must be a non-empty string or integer, got {value!r}")
    return str(value)


def parse_impression(obj: Any, *, queries: Mapping[str, str] | None = None,
                     text_to_id: Mapping[str, str] | None = None, corpus=None,
                     unshown_clicks: str = "skip", stats: ClickLogStats | None = None) -> Impression:
    """Validate one record; raises ``_Malformed`` with a reason from :data:`REASONS`."""
    if not isinstance(obj, dict):
        raise _Malformed("invalid_json", f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("query")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise _Malformed("bad_field", '"query" must be a non-empty string')
    text = text.strip() if text else None
    if obj.get("query_id") is not None:
        qid = _id(obj["query_id"], '"query_id"')
    elif text is not None:
        # A text-only log names queries by text; reuse the collection's id when the text matches.
        qid = (text_to_id or {}).get(text, text)
    else:
        raise _Malformed("missing_query", REASONS["missing_query"])
    if text is None and queries is not None:
        if qid not in queries:
            raise _Malformed("unknown_query", f"query id {qid!r} is not in the collection and the record has no text")
        text = queries[qid]

    shown_raw = obj.get("shown")
    if not isinstance(shown_raw, list):
        raise _Malformed("bad_field" if shown_raw is not None else "empty_shown",
                         '"shown" must be a list of document ids')
    if not shown_raw:
        raise _Malformed("empty_shown", REASONS["empty_shown"])
    shown = [_id(d, "a shown id") for d in shown_raw]
    if len(set(shown)) != len(shown):
        dup = next(d for d in shown if shown.count(d) > 1)
        raise _Malformed("duplicate_shown", f"document {dup!r} is shown twice")
    if corpus is not None:
        missing = [d for d in shown if d not in corpus]
        if missing:
            raise _Malformed("unknown_doc", f"shown document {missing[0]!r} is not in the corpus"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    clicks_raw = obj.get("clicks", [])
    if clicks_raw is None:
        clicks_raw = []
    if not isinstance(clicks_raw, list):
        raise _Malformed("bad_field", '"clicks" must be a list of document ids')
    shown_set = set(shown)
    clicks: list[str] = []
    repeated = dropped = 0
    for c in clicks_raw:
        c = _id(c, "a clicked id")
        if c not in shown_set:
            if unshown_clicks == "drop":
                dropped += 1
                continue
            raise _Malformed("click_not_shown", f"clicked document {c!r} is not among the {len(shown)} shown")
        if c in clicks:
            repeated += 1
            continue
        clicks.append(c)

    dwell = None
    if obj.get("dwell") is not None:
        raw = obj["dwell"]
        if not isinstance(raw, dict):
            raise _Malformed("bad_dwell", '"dwell" must be an object {doc id: seconds}')
        dwell = {}
        for d, sec in raw.items():
            if isinstance(sec, bool) or not isinstance(sec, (int, float)) or not math.isfinite(sec) or sec < 0:
                raise _Malformed("bad_dwell", f"dwell of {d!r} must be a non-negative number, got {sec!r}")
            if str(d) not in clicks:
                raise _Malformed("bad_dwell", f"dwell given for {d!r}, which was not clicked")
            dwell[str(d)] = float(sec)

    session = obj.get("session")
    if session is not None:
        session = _id(session, '"session"')
    if stats is not None:
        stats.repeated_clicks += repeated
        stats.dropped_clicks += dropped
    return Impression(qid, shown, clicks, text, dwell, session)


def read_click_log(paths: str | Path | Iterable[str | Path], *, queries: Mapping[str, str] | None = None,
                   corpus=None, strict: bool = False, unshown_clicks: str = "skip") -> ClickLog:
    """Read one or more JSONL click logs (``.gz`` allowed).

    ``queries`` ({id: text}) and ``corpus`` (anything supporting ``in``), when given, make unknown
    query and document ids malformations. ``unshown_clicks="drop"`` removes clicks on documents
    that were not shown (counted) instead of treating the impression as malformed — the Yandex
    sample has such clicks, probably on other page elements."""
    if unshown_clicks not in ("skip", "drop"):
        raise ConfigError(f"unshown_clicks must be 'skip' or 'drop', got {unshown_clicks!r}")
    if isinstance(paths, (str, Path)):
        paths = [paths]
    text_to_id = None
    if queries is not None:
        text_to_id = {}
        for qid, text in queries.items():
            text_to_id.setdefault(text.strip(), qid)
    stats = ClickLogStats()
    impressions: list[Impression] = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"click log {path} not found")
        stats.files.append(str(path))
        for lineno, line in iter_lines(path):
            if not line.strip():
                continue
            stats.lines += 1
            where = f"{path}:{lineno}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise _Malformed("invalid_json", f"invalid JSON: {err.msg} (column {err.colno})") from None
                imp = parse_impression(obj, queries=queries, text_to_id=text_to_id, corpus=corpus,
                                       unshown_clicks=unshown_clicks, stats=stats)
            except _Malformed as bad:
                if strict:
                    raise DataFormatError(path, lineno, f"{bad.message} [{bad.reason}]") from None
                stats.note(bad.reason, where, bad.message)
                continue
            imp.source = where
            impressions.append(imp)
    stats.impressions = len(impressions)
    if stats.skipped:
        log.warning("click log: skipped %d malformed impressions (%s)", stats.skipped_total,
                    ", ".join(f"{r} {n}" for r, n in stats.skipped.most_common()))
    if not impressions:
        raise DataFormatError(stats.files[0] if stats.files else "<none>", None,
                              "no valid impressions" + (f" ({stats.skipped_total} malformed)" if stats.skipped else ""))
    return ClickLog(impressions, stats)


def write_click_log(path: str | Path, impressions: Iterable[Impression]) -> int:
    """Write impressions atomically (gzip when ``path`` ends in .gz); returns how many."""
    n = 0
    with atomic_write(path) as fh:
        for imp in impressions:
            fh.write(json.dumps(imp.to_json(), ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n
