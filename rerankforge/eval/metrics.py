"""ir-measures evaluation. Any ir-measures string works ("nDCG@10", "RR(rel=2)@10", "P@5", ...);
graded qrels are used as graded (nDCG gains are the grades; binary measures use rel >= 1).

Fractional grades (e.g. 0.5) are evaluated as they are: trec_eval (ir-measures' default
provider) takes integer grades only, so all grades are multiplied by the smallest factor that
makes them integers and every ``rel`` threshold by the same factor. nDCG with linear gains is
invariant to that scaling; measures whose value depends on the grades' scale (ERR, exponential
nDCG gains, explicit ``gains``) are refused for fractional qrels instead of giving a wrong number.
"""

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


_SCALE_FREE = ("Judged", "NumRet", "NumQ", "NumRel", "NumRelRet")


def _grade_scale(qrels: Mapping[str, Mapping[str, float]]) -> int:
    """The smallest integer that makes every grade an integer (1 for integer qrels)."""
    from fractions import Fraction
    from math import lcm

    scale = 1
    for docs in qrels.values():
        for g in docs.values():
            if float(g).is_integer():
                continue
            den = Fraction(str(float(g))).limit_denominator(10**6).denominator
            scale = lcm(scale, den)
            if scale > 10**6:
                raise ConfigError(f"qrels grade {g!r}: fractional grades need a common denominator <= 1e6")
    return scale


def _calc(measures: list, qrels: Mapping[str, Mapping[str, float]], run_d):
    """``ir_measures.iter_calc`` with fractional grades scaled to integers (module docstring);
    yields the metrics under the measures as given."""
    scale = _grade_scale(qrels)
    if scale == 1:
        yield from ir_measures.iter_calc(measures, {q: dict(d) for q, d in qrels.items()}, run_d)
        return
    scaled_of = {}
    for m in measures:
        params = dict(m.params)
        if "rel" in m.SUPPORTED_PARAMS:
            scaled = m(rel=params.get("rel", 1) * scale)
        elif (m.NAME == "nDCG" and params.get("dcg", "log2") == "log2" and "gains" not in params) \
                or m.NAME in _SCALE_FREE:
            scaled = m
        else:
            raise ConfigError(f"measure {m} depends on the grades' scale and the qrels have fractional grades; "
                              f"use nDCG (linear gains) or a measure with a rel threshold")
        scaled_of[scaled] = m
    int_qrels = {q: {d: round(float(g) * scale) for d, g in docs.items()} for q, docs in qrels.items()}
    for metric in ir_measures.iter_calc(list(scaled_of), int_qrels, run_d):
        yield metric._replace(measure=scaled_of[metric.measure])


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Run,
             measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over the judged queries. Judged queries missing from the run count as 0."""
    parsed = parse_measures(measures)
    qrels = {q: dict(d) for q, d in qrels.items()}
    run_d = to_dict({q: docs for q, docs in run.items() if q in qrels})
    sums = {name: 0.0 for name in parsed}
    by_measure = {m: name for name, m in parsed.items()}
    for metric in _calc(list(parsed.values()), qrels, run_d):
        sums[by_measure[metric.measure]] += metric.value
    n = sum(1 for q, d in qrels.items() if any(g > 0 for g in d.values()))
    return {name: (sums[name] / n if n else 0.0) for name in parsed}


def per_query(qrels, run: Run, measure: str = "nDCG@10") -> dict[str, float]:
    """One measure per judged query (0.0 for queries the run misses)."""
    m = parse_measures([measure])[measure]
    values = {q: 0.0 for q, d in qrels.items() if any(g > 0 for g in d.values())}
    run_d = to_dict({q: docs for q, docs in run.items() if q in values})
    for metric in _calc([m], qrels, run_d):
        values[metric.query_id] = metric.value
    return values
