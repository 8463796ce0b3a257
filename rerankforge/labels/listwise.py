"""Listwise permutation labels: RankGPT's sliding window, strict permutation parsing with repair,
and rank -> training targets.

Sun et al., "Is ChatGPT Good at Search? Investigating Large Language Models as Re-Ranking
Agents", EMNLP 2023 (RankGPT). A window of ``window`` candidates slides from the bottom of the
first-stage ranking to the top in steps of ``step``; each window is reordered by the ranker, so
strong candidates bubble up by up to ``window - step`` places per window.

Rank targets the losses can use (rank 1 = best):

* ``teacher``: ``-rank`` (``rank_score="neg_rank"``) or ``1/rank`` (``"reciprocal"``): a score
  that decreases with rank, for the teacher losses (``kl``: softmax(-rank / T) is then a
  geometric target distribution; ``margin_mse``: margins are rank differences).
* ``label`` (optional, ``rank_grades=[c_1, ..., c_m]``, increasing cutoffs): a candidate ranked
  ``<= c_1`` gets grade m, ``<= c_2`` grade m-1, ..., deeper than ``c_m`` grade 0; e.g.
  ``[1, 3, 10]`` -> rank 1: 3, ranks 2-3: 2, ranks 4-10: 1, below: 0 (for ``listwise_ce``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rerankforge.errors import ConfigError

_ID = re.compile(r"\[\s*(\d+)\s*\]")


@dataclass
class ParsedPermutation:
    """``order``: 0-based indices into the window, a full permutation after repair."""

    order: list[int]
    found: int
    duplicates: int
    out_of_range: int
    missing: int

    @property
    def clean(self) -> bool:
        return self.duplicates == 0 and self.out_of_range == 0 and self.missing == 0


def parse_permutation(text: str, n: int) -> ParsedPermutation:
    """Read ``[3] > [1] > [2]`` style output for ``n`` passages (identifiers 1..n).

    Only bracketed identifiers count (a stray number in prose is not a ranking). Repairs follow
    RankGPT: identifiers out of range are dropped, repeats keep their first position, and
    passages the model never named are appended in their current order. Every repair is counted
    so callers can report how often the ranker's output had to be fixed."""
    seen: list[int] = []
    duplicates = out_of_range = found = 0
    for m in _ID.finditer(text):
        found += 1
        k = int(m.group(1)) - 1
        if not 0 <= k < n:
            out_of_range += 1
        elif k in seen:
            duplicates += 1
        else:
            seen.append(k)
    missing = [k for k in range(n) if k not in seen]
    return ParsedPermutation(seen + missing, found, duplicates, out_of_range, len(missing))


def window_starts(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` windows, bottom first, ending with the one that covers the top.

    RankGPT's loop stops when ``start`` would go below 0 and so skips the head when ``n - window``
    is not a multiple of ``step``; here the last window is moved to ``[0, window)`` instead (a full
    window, so the top of the ranking is judged with as much context as every other window)."""
    if window < 2 or step < 1:
        raise ConfigError(f"sliding window needs window >= 2 and step >= 1 (got window={window}, step={step})")
    if step > window:
        raise ConfigError(f"step ({step}) larger than window ({window}) would leave candidates unranked")
    spans = []
    end = n
    while True:
        if end - window <= 0:
            spans.append((0, min(n, window)))
            return spans
        spans.append((end - window, end))
        end -= step


#: ranks a window: (query, passage texts) -> permutation output text (e.g. "[2] > [1] > [3]")
WindowRanker = Callable[[str, Sequence[str]], str]


@dataclass
class SlidingResult:
    order: list[int]
    windows: int
    repairs: int
    unparsable: int


def sliding_window(query: str, texts: Sequence[str], rank_window: WindowRanker, window: int = 20,
                   step: int = 10) -> SlidingResult:
    """Rerank ``texts`` (given in first-stage order) one window at a time; returns the final
    order as indices into ``texts``."""
    order = list(range(len(texts)))
    state = SlidingState(order, window_starts(len(texts), window, step))
    while not state.done:
        start, end = state.current
        state.apply(rank_window(query, [texts[i] for i in order[start:end]]))
    return state.result()


class SlidingState:
    """One query's progress through its windows (lets callers batch windows across queries)."""

    def __init__(self, order: list[int], spans: list[tuple[int, int]]):
        self.order = order
        self.spans = spans
        self.k = 0
        self.repairs = 0
        self.unparsable = 0

    @property
    def done(self) -> bool:
        return self.k >= len(self.spans)

    @property
    def current(self) -> tuple[int, int]:
        return self.spans[self.k]

    def window_items(self) -> list[int]:
        start, end = self.current
        return self.order[start:end]

    def apply(self, output: str) -> ParsedPermutation:
        start, end = self.current
        parsed = parse_permutation(output, end - start)
        if parsed.found == 0:
            self.unparsable += 1  # the order is kept as it was (the repair of an empty answer)
        elif not parsed.clean:
            self.repairs += 1
        items = self.order[start:end]
        self.order[start:end] = [items[k] for k in parsed.order]
        self.k += 1
        return parsed

    def result(self) -> SlidingResult:
        return SlidingResult(list(self.order), len(self.spans), self.repairs, self.unparsable)


def rank_grade(rank: int, cutoffs: Sequence[int]) -> float:
    for i, cutoff in enumerate(cutoffs):
        if rank <= cutoff:
            return float(len(cutoffs) - i)
    return 0.0


def rank_targets(doc_ids_in_order: Sequence[str], rank_score: str = "neg_rank",
                 rank_grades: Sequence[int] | None = None) -> dict[str, dict[str, float]]:
    """``{"teacher": {doc: score}, ["label": {doc: grade}]}`` from a best-first order."""
    if rank_score not in ("neg_rank", "reciprocal"):
        raise ConfigError(f"rank_score must be 'neg_rank' or 'reciprocal', got {rank_score!r}")
    if rank_grades is not None and list(rank_grades) != sorted(set(rank_grades)):
        raise ConfigError(f"rank_grades must be strictly increasing rank cutoffs, got {list(rank_grades)}")
    teacher = {d: (-float(r) if rank_score == "neg_rank" else 1.0 / r)
               for r, d in enumerate(doc_ids_in_order, start=1)}
    out = {"teacher": teacher}
    if rank_grades:
        out["label"] = {d: rank_grade(r, rank_grades) for r, d in enumerate(doc_ids_in_order, start=1)}
    return out


def initial_order(candidates) -> list[int]:
    """First-stage order of a group's candidates: by ``rank``, else by first-stage ``score``
    (descending), else file order. Candidates without a rank/score (e.g. judged positives the
    first stage missed) go last: putting them first would leak the labels into the ranking."""
    idx = list(range(len(candidates)))
    if any(c.rank is not None for c in candidates):
        return sorted(idx, key=lambda i: (candidates[i].rank is None, candidates[i].rank or 0, i))
    if any(c.score is not None for c in candidates):
        return sorted(idx, key=lambda i: (candidates[i].score is None, -(candidates[i].score or 0.0), i))
    return idx
