"""ir-measures evaluation. Any ir-measures string works ("nDCG@10", "RR(rel=2)@10", "P@5", ...);
graded qrels are used as graded (nDCG gains are the grades; binary measures use rel >= 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ir_measures

from rerankforge.data.trec import Run, to_dict
from rerankforge.errors import ConfigError

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "AP@100")


def parse_measures(names: Sequence[str]) -> dict[str, object]:
    parsed = {}
    for name in names:
        try:
            parsed[name] = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError) as err:
            raise ConfigError(f"unknown ir-measures measure {name!r}: {err}") from None
    return parsed


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Run,
             measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over the judged queries. Judged queries missing from the run count as 0."""
    parsed = parse_measures(measures)
    qrels = {q: dict(d) for q, d in qrels.items()}
    run_d = to_dict({q: docs for q, docs in run.items() if q in qrels})
    sums = {name: 0.0 for name in parsed}
    by_measure = {m: name for name, m in parsed.items()}
    for metric in ir_measures.iter_calc(list(parsed.values()), qrels, run_d):
        sums[by_measure[metric.measure]] += metric.value
    n = sum(1 for q, d in qrels.items() if any(g > 0 for g in d.values()))
    return {name: (sums[name] / n if n else 0.0) for name in parsed}


def per_query(qrels, run: Run, measure: str = "nDCG@10") -> dict[str, float]:
    """One measure per judged query (0.0 for queries the run misses)."""
    m = parse_measures([measure])[measure]
    values = {q: 0.0 for q, d in qrels.items() if any(g > 0 for g in d.values())}
    run_d = to_dict({q: docs for q, docs in run.items() if q in values})
    for metric in ir_measures.iter_calc([m], {q: dict(d) for q, d in qrels.items()}, run_d):
        values[metric.query_id] = metric.value
    return values
