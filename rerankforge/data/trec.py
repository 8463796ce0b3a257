"""TREC run files: ``qid Q0 docid rank score tag``, one line per retrieved document."""

from __future__ import annotations

import math
from collections.abc import Container, Mapping
from pathlib import Path

from rerankforge.errors import DataFormatError
from rerankforge.utils.io import atomic_write, iter_lines

# query id -> [(doc id, score)] sorted best first
Run = dict[str, list[tuple[str, float]]]


def read_run(
    path: str | Path,
    queries: Container[str] | None = None,
    corpus: Container[str] | None = None,
) -> Run:
    """Read a TREC run. Each query's list is sorted by score (descending), ties by rank.

    Wrong field counts, non-numeric rank/score, a score that is NaN or infinite, a document listed twice for one query and (when
    ``queries``/``corpus`` are given) unknown ids raise :class:`DataFormatError` naming the line.
    """
    rows: dict[str, list[tuple[float, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(path, lineno, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
        qid, _, did, rank, score, _tag = parts
        try:
            rank_i = int(rank)
            score_f = float(score)
        except ValueError:
            raise DataFormatError(path, lineno, f"rank {rank!r} / score {score!r} are not numbers") from None
        if not math.isfinite(score_f):
            # inf passes sorting but turns into nan in min-max fusion and score arithmetic
            raise DataFormatError(path, lineno, f"score {score!r} is not a finite number")
        if queries is not None and qid not in queries:
            raise DataFormatError(path, lineno, f"unknown query id {qid!r}")
        if corpus is not None and did not in corpus:
            raise DataFormatError(path, lineno, f"unknown document id {did!r}")
        if (qid, did) in seen:
            raise DataFormatError(path, lineno, f"document {did!r} listed twice for query {qid!r} (also line {seen[qid, did]})")
        seen[qid, did] = lineno
        rows.setdefault(qid, []).append((score_f, rank_i, did))
    return {
        qid: [(did, score) for score, _, did in sorted(entries, key=lambda e: (-e[0], e[1]))]
        for qid, entries in rows.items()
    }


def write_run(path: str | Path, run: Mapping[str, list[tuple[str, float]]], tag: str = "rerankforge") -> None:
    """Write a run atomically; each query's documents are written best first with ranks 1..n."""
    with atomic_write(path) as fh:
        for qid, docs in run.items():
            ranked = sorted(docs, key=lambda e: -e[1])
            for rank, (did, score) in enumerate(ranked, start=1):
                fh.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def truncate(run: Run, depth: int) -> Run:
    return {qid: docs[:depth] for qid, docs in run.items()}


def to_dict(run: Run) -> dict[str, dict[str, float]]:
    """The ``{qid: {docid: score}}`` form that ir-measures takes."""
    return {qid: {did: float(s) for did, s in docs} for qid, docs in run.items()}
