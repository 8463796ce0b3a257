"""Resumable label jobs: groups in, the same groups with new label fields out.

A job runs its labeler over batches of queries. After each batch the finished queries and their
values are appended to ``<out>.partial`` (one JSON line each, flushed and fsynced), so a killed
job restarts where it stopped: finished queries are read back, never recomputed. The partial
file starts with a header that fingerprints the job (labeler settings + a hash of the input
file); a partial file from a different job is refused rather than silently mixed in. When every
query is done the values are merged into the groups and written to ``<out>`` atomically, and the
partial file is removed. Queries with failed pairs (e.g. an API that kept answering 500) are
written to ``<out>`` with those candidates unlabelled but are not recorded as finished, so a
rerun retries exactly them. A completed job leaves ``<out>.label.json`` (its fingerprint and
summary): running the same job again returns at once unless the input, settings or output changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.data.groups import Group, read_groups, write_groups
from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.utils.io import write_json

log = logging.getLogger(__name__)

PARTIAL_FORMAT = "rerankforge.label-partial/1"
CANDIDATE_FIELDS = ("label", "teacher", "score", "propensity", "weight")


@dataclass
class QueryLabels:
    """A labeler's output for one query: ``values[field][doc_id]`` (None clears the field),
    doc ids whose value could not be obtained, and free-form counters (parse repairs, ...)."""

    values: dict[str, dict[str, float | None]]
    failed: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Labeler:
    """Labels a batch of groups. ``texts[i][j]`` is the text of ``groups[i].candidates[j]``."""

    kind: str = ""
    #: candidate fields this labeler writes
    fields: tuple[str, ...] = ()
    #: False for labelers that never read texts (no collection needed for text-less groups)
    needs_text: bool = True

    def settings(self) -> dict[str, Any]:
        """Everything that changes the output; part of the resume fingerprint."""
        raise NotImplementedError

    def label(self, groups: Sequence[Group], texts: Sequence[Sequence[str]]) -> list[QueryLabels]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (thread pools, caches)."""


@dataclass
class LabelSummary:
    kind: str
    out: str
    queries: int
    resumed: int
    computed: int
    pairs: int
    seconds: float
    failed_pairs: int
    failed_queries: list[str]
    info: dict[str, Any]

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / max(self.seconds, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "out": self.out, "queries": self.queries, "resumed": self.resumed,
                "computed": self.computed, "pairs": self.pairs, "seconds": round(self.seconds, 3),
                "pairs_per_s": self.pairs_per_s, "failed_pairs": self.failed_pairs,
                "failed_queries": self.failed_queries, "info": self.info}


def partial_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def done_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".label.json")


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_stamp(path: str | Path) -> str | None:
    """A cheap identity of a model directory (file names, sizes, mtimes): a retrained model at the
    same path must not resume from the old model's labels."""
    path = Path(path)
    if not path.is_dir():
        return None
    h = hashlib.sha1()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class PartialStore:
    """The append-only record of finished queries of one job."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], restart: bool = False):
        self.path = path
        self.fingerprint = _canonical(fingerprint)
        self.done: dict[str, dict[str, dict[str, float | None]]] = {}
        self.info: dict[str, Any] = {}
        if restart and path.exists():
            path.unlink()
        if path.exists():
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"format": PARTIAL_FORMAT, "job": self.fingerprint}, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        self._fh = open(path, "a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        # A kill during a write can leave a last line without its newline: drop it (that batch is
        # simply recomputed) and cut the file back so later appends start on a fresh line.
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: dropping an incomplete last record left by an interrupted run", self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
        lines = data[:end].decode("utf-8").splitlines()
        if not lines:
            raise DataFormatError(self.path, 1, "empty partial file; delete it or pass --restart")
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            raise DataFormatError(self.path, 1, "not a label partial file; delete it or pass --restart") from None
        if header.get("format") != PARTIAL_FORMAT:
            raise DataFormatError(self.path, 1, "not a label partial file; delete it or pass --restart")
        if header.get("job") != self.fingerprint and len(lines) == 1:
            # Nothing was finished under the old settings: nothing to lose by starting afresh.
            self.path.write_text(json.dumps({"format": PARTIAL_FORMAT, "job": self.fingerprint}, sort_keys=True) + "\n")
            return
        if header.get("job") != self.fingerprint:
            diff = sorted(k for k in set(header.get("job", {})) | set(self.fingerprint)
                          if header.get("job", {}).get(k) != self.fingerprint.get(k))
            raise ConfigError(f"{self.path} holds progress of a different job (differs in: {', '.join(diff)}); "
                              f"rerun with the same settings to resume, or pass --restart to start over")
        for lineno, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
                self.done[str(rec["query_id"])] = rec["values"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataFormatError(self.path, lineno, "corrupt record; delete the file or pass --restart") from None
            for k, v in (rec.get("info") or {}).items():
                _accumulate(self.info, k, v)

    def append(self, records: list[tuple[str, QueryLabels]]) -> None:
        for qid, result in records:
            self._fh.write(json.dumps({"query_id": qid, "values": result.values, "info": result.info},
                                      ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _accumulate(acc: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        acc[key] = acc.get(key, 0) + value


def group_keys(groups: Sequence[Group]) -> list[str]:
    """One key per group: its query id, suffixed ``#n`` on the n-th repeat (several groups per
    query are allowed, e.g. one per click session)."""
    seen: dict[str, int] = {}
    keys = []
    for g in groups:
        n = seen.get(g.query_id, 0)
        seen[g.query_id] = n + 1
        keys.append(g.query_id if n == 0 else f"{g.query_id}#{n}")
    return keys


def candidate_texts(group: Group, text_of: Callable[[str], str] | None) -> list[str]:
    texts = []
    for c in group.candidates:
        if c.text is not None:
            texts.append(c.text)
        elif text_of is not None:
            try:
                texts.append(text_of(c.doc_id))
            except KeyError:
                raise ConfigError(f"query {group.query_id!r}: document {c.doc_id!r} is not in the collection") from None
        else:
            raise ConfigError(f"query {group.query_id!r}: candidate {c.doc_id!r} has no text; "
                              f"pass --collection so texts can be looked up")
    return texts


def apply_values(group: Group, values: dict[str, dict[str, float | None]]) -> None:
    for name, by_doc in values.items():
        if name not in CANDIDATE_FIELDS:
            raise ValueError(f"labelers may only write {CANDIDATE_FIELDS}, not {name!r}")
        for c in group.candidates:
            if c.doc_id in by_doc:
                v = by_doc[c.doc_id]
                setattr(c, name, None if v is None else float(v))


def run_label_job(labeler: Labeler, groups_path: str | Path, out_path: str | Path, *,
                  text_of: Callable[[str], str] | None = None, batch_queries: int = 16,
                  restart: bool = False, progress: bool = True,
                  after_batch: Callable[[int, int], None] | None = None) -> LabelSummary:
    """Label every group of ``groups_path`` and write ``out_path`` atomically.

    ``after_batch(batch_index, queries_computed_so_far)`` runs after each batch is on disk (tests
    use it to kill a job mid-way)."""
    groups_path, out_path = Path(groups_path), Path(out_path)
    if groups_path.resolve() == out_path.resolve():
        raise ConfigError(f"--out {out_path} is the input file; write labels to a new file")
    if batch_queries < 1:
        raise ConfigError("batch_queries must be >= 1")
    groups = read_groups(groups_path)
    keys = group_keys(groups)
    fingerprint = {"kind": labeler.kind, "settings": labeler.settings(), "input_sha1": file_sha1(groups_path)}
    stamp = done_path(out_path)
    if not restart and out_path.exists() and stamp.exists():
        done = json.loads(stamp.read_text())
        if done.get("job") == _canonical(fingerprint) and done.get("out_sha1") == file_sha1(out_path):
            labeler.close()
            log.info("%s is already labelled by this job; nothing to do", out_path)
            return LabelSummary(labeler.kind, str(out_path), len(groups), len(groups), 0, 0, 0.0, 0, [],
                                dict(done.get("summary", {}).get("info", {})))
    stamp.unlink(missing_ok=True)
    store = PartialStore(partial_path(out_path), fingerprint, restart=restart)
    todo = [(k, g) for k, g in zip(keys, groups) if k not in store.done]
    resumed = len(groups) - len(todo)
    if resumed:
        log.info("%s: resuming, %d of %d queries already labelled", store.path, resumed, len(groups))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(groups), initial=resumed, desc=f"label {labeler.kind}", unit="query", dynamic_ncols=True)
    failed: dict[str, QueryLabels] = {}
    info: dict[str, Any] = dict(store.info)
    pairs = computed = 0
    start = time.perf_counter()
    try:
        for b, s in enumerate(range(0, len(todo), batch_queries)):
            batch_keys = [k for k, _ in todo[s : s + batch_queries]]
            batch = [g for _, g in todo[s : s + batch_queries]]
            texts = [candidate_texts(g, text_of) if labeler.needs_text else [] for g in batch]
            results = labeler.label(batch, texts)
            if len(results) != len(batch):
                raise RuntimeError(f"{type(labeler).__name__} returned {len(results)} results for {len(batch)} queries")
            finished = []
            for key, r in zip(batch_keys, results):
                for name, v in r.info.items():
                    _accumulate(info, name, v)
                if r.failed:
                    failed[key] = r
                else:
                    finished.append((key, r))
            store.append(finished)
            for key, r in finished:
                store.done[key] = r.values
            computed += len(batch)
            pairs += sum(len(g.candidates) for g in batch)
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(pairs_s=f"{pairs / max(time.perf_counter() - start, 1e-9):.1f}",
                                failed=sum(len(r.failed) for r in failed.values()))
            if after_batch is not None:
                after_batch(b, computed)
    finally:
        if bar is not None:
            bar.close()
        store.close()
        labeler.close()
    seconds = time.perf_counter() - start

    for key, g in zip(keys, groups):
        if key in store.done:
            apply_values(g, store.done[key])
        elif key in failed:
            r = failed[key]
            # Keep what was obtained; failed candidates are left unlabelled, never stale.
            values = {name: {d: (None if d in r.failed else v) for d, v in by_doc.items()}
                      for name, by_doc in r.values.items()}
            for name in labeler.fields:
                values.setdefault(name, {}).update({d: None for d in r.failed})
            apply_values(g, values)
    write_groups(out_path, groups)
    summary = LabelSummary(labeler.kind, str(out_path), len(groups), resumed, computed, pairs, seconds,
                           sum(len(r.failed) for r in failed.values()), sorted(failed), info)
    if not failed:
        # The stamp lets a rerun of a finished job return at once instead of recomputing it.
        write_json(stamp, {"job": store.fingerprint, "out_sha1": file_sha1(out_path), "summary": summary.to_json()})
        store.path.unlink(missing_ok=True)
    return summary
