"""The mining report: JSON beside the groups file plus a terminal summary.

``recall`` is the mean over queries with positives of (positives ranked <= k) / (positives),
i.e. ir-measures ``R@k`` with binary relevance, at 10, 100, 1000 (those within the run's depth),
``rank_max`` and the run's depth; ``success`` is the share of those queries with at least one
positive ranked <= k. ``removed`` counts window candidates per rule, each under the first rule that
removed it; ``not_selected`` are candidates that passed every rule but were not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.mining.negatives import RULES, MiningStats, NegativePolicy

SCHEMA = "rerankforge.mining-report/1"


def recall_at(stats: MiningStats, depths: list[int]) -> tuple[dict[str, float], dict[str, float]]:
    recall, success = {}, {}
    n = len(stats.positive_ranks)
    for k in depths:
        if n == 0:
            recall[f"R@{k}"] = success[f"success@{k}"] = 0.0
            continue
        rs = [sum(1 for r in ranks if r is not None and r <= k) / len(ranks) for ranks in stats.positive_ranks]
        hit = [any(r is not None and r <= k for r in ranks) for ranks in stats.positive_ranks]
        recall[f"R@{k}"] = float(np.mean(rs))
        success[f"success@{k}"] = float(np.mean(hit))
    return recall, success


def report_depths(policy: NegativePolicy, run_depth: int) -> list[int]:
    depths = {k for k in (10, 100, 1000) if k <= max(run_depth, 1)}
    depths.add(min(policy.rank_max, run_depth) if run_depth else policy.rank_max)
    if run_depth:
        depths.add(run_depth)
    return sorted(depths)


def _rank_buckets(ranks: list[int], policy: NegativePolicy) -> dict[str, int]:
    if not ranks:
        return {}
    lo, hi = policy.rank_min, max(max(ranks), policy.rank_min)
    edges = np.unique(np.linspace(lo, hi + 1, num=min(10, hi - lo + 1) + 1).round().astype(int))
    counts, _ = np.histogram(ranks, bins=edges)
    return {f"{edges[i]}-{edges[i + 1] - 1}": int(c) for i, c in enumerate(counts)}


def build_report(stats: MiningStats, policy: NegativePolicy, *, source: Mapping[str, Any],
                 out: str | Path | None = None, timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    depths = report_depths(policy, stats.run_depth)
    recall, success = recall_at(stats, depths)
    with_pos = stats.judged_queries - stats.queries_without_positives
    removed = {r: int(stats.removed.get(r, 0)) for r in RULES}
    return {
        "schema": SCHEMA,
        "output": str(out) if out else None,
        "source": dict(source),
        "policy": {k: v for k, v in vars(policy).items()},
        "queries": {
            "judged": stats.judged_queries,
            "with_positives": with_pos,
            "without_positives": stats.queries_without_positives,
            "not_in_run": stats.queries_not_in_run,
            "written": stats.queries_written,
            "no_negatives": int(stats.negatives_per_query.get(0, 0)),
            "fewer_than_requested": stats.queries_short,
            "dropped": stats.queries_dropped,
            "dropped_missing_positive_text": stats.queries_missing_text,
            "margin_skipped_no_positive_score": stats.margin_skipped_queries,
        },
        "recall": recall,
        "success": success,
        "positives": {"total": stats.positives, "scored_by_retriever": stats.positives_scored_by_retriever,
                      "without_text": stats.positives_without_text},
        "candidates": {
            "in_window": stats.in_window,
            "eligible": stats.eligible,
            "selected": stats.selected,
            "not_selected": max(stats.in_window - sum(removed.values()) - stats.selected, 0),
            "judged_non_relevant_selected": stats.judged_negatives_selected,
        },
        "removed": removed,
        "negatives_per_query": {str(k): v for k, v in sorted(stats.negatives_per_query.items())},
        "negative_rank_histogram": _rank_buckets(stats.negative_ranks, policy),
        "negative_rank_mean": float(np.mean(stats.negative_ranks)) if stats.negative_ranks else None,
        "rescore": {"model": policy.rescore_model, "pairs": stats.rescored_pairs,
                    "seconds": round(stats.rescore_seconds, 2)} if policy.rescore_model or stats.rescored_pairs else None,
        "timings": {k: round(float(v), 3) for k, v in (timings or {}).items()},
    }


def report_path(out: str | Path) -> Path:
    out = Path(out)
    name = out.name
    for suffix in (".jsonl.gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.report.json")


def print_report(report: Mapping[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    q = report["queries"]
    head = Table(title=f"mining: {report.get('output') or ''}", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    for label, value in [
        ("judged queries", q["judged"]), ("with positives", q["with_positives"]),
        ("groups written", q["written"]), ("queries with no negatives", q["no_negatives"]),
        ("queries with fewer than requested", q["fewer_than_requested"]), ("queries dropped", q["dropped"]),
        ("judged queries missing from the run", q["not_in_run"]),
        ("margin rules skipped (no positive score)", q["margin_skipped_no_positive_score"]),
    ]:
        head.add_row(label, str(value))
    for name, value in {**report["recall"], **report["success"]}.items():
        head.add_row(f"positives {name}", f"{value:.4f}")
    console.print(head)

    rules = Table(title="window candidates")
    rules.add_column("rule / outcome")
    rules.add_column("candidates", justify="right")
    c = report["candidates"]
    rules.add_row("in rank window", str(c["in_window"]))
    for rule, n in report["removed"].items():
        rules.add_row(f"removed: {rule}", str(n))
    rules.add_row("passed, not selected", str(c["not_selected"]))
    rules.add_row("selected as negatives", str(c["selected"]))
    console.print(rules)

    hist = report["negatives_per_query"]
    if hist:
        h = Table(title="negatives per query")
        h.add_column("negatives", justify="right")
        h.add_column("queries", justify="right")
        top = max(hist.values())
        h.add_column("")
        for k, v in hist.items():
            h.add_row(k, str(v), "#" * max(1, round(30 * v / top)) if v else "")
        console.print(h)
