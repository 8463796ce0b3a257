"""The reranking report: how deep to rerank (cutoff sweep), is it significant, who wins and loses.

Quality: every candidate of the top-``max(K)`` is scored once; the reranked run at cutoff K is the
first stage's top-K sorted by those scores. A pair's score does not depend on K, so this gives
exactly the run that reranking only the top-K would give.

Latency is measured, not derived: for each K, each of ``timing_queries`` sampled queries has its
top-K candidates scored in one ``score_pairs`` call (batches of ``batch_size``) and timed
separately — the per-query latency an online reranker would see, tokenisation included.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerankforge.data.beir import Collection
from rerankforge.data.trec import Run, truncate
from rerankforge.errors import ConfigError
from rerankforge.eval.metrics import evaluate, per_query
from rerankforge.rerank.run import rerank
from rerankforge.eval.significance import compare, wins_losses
from rerankforge.models.base import Reranker

DEFAULT_CUTOFFS = (10, 20, 50, 100, 200)


def rerank_at(first: Run, scores: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """The first stage's top-``k`` per query, sorted by the model's scores."""
    return {q: sorted(((d, scores[q][d]) for d, _ in docs[:k]), key=lambda e: -e[1]) for q, docs in first.items()
            if q in scores}


def time_cutoffs(model: Reranker, queries: Mapping[str, str], corpus, first: Run, cutoffs: Sequence[int],
                 query_ids: Sequence[str], batch_size: int = 64, bf16: bool = True) -> dict[int, dict[str, float]]:
    """Per-query latency of scoring the top-K candidates, for each K, on ``query_ids``."""
    out: dict[int, dict[str, float]] = {}
    if not query_ids:
        return out
    warm = query_ids[0]
    model.score_pairs([queries[warm]] * 2, [corpus.text(d) for d, _ in first[warm][:2]], batch_size=batch_size, bf16=bf16)
    for k in cutoffs:
        ms, pairs = [], 0
        for q in query_ids:
            docs = [corpus.text(d) for d, _ in first[q][:k]]
            t = time.perf_counter()
            model.score_pairs([queries[q]] * len(docs), docs, batch_size=batch_size, bf16=bf16)
            ms.append(1000.0 * (time.perf_counter() - t))
            pairs += len(docs)
        arr = np.array(ms)
        out[k] = {"ms_per_query": float(arr.mean()), "ms_p50": float(np.percentile(arr, 50)),
                  "ms_p95": float(np.percentile(arr, 95)), "pairs_per_s": pairs / max(arr.sum() / 1000.0, 1e-9),
                  "timed_queries": len(query_ids), "timed_pairs": pairs}
    return out


def cutoff_sweep(model: Reranker, collection: Collection, split: str, first: Run,
                 cutoffs: Sequence[int] = DEFAULT_CUTOFFS, measures: Sequence[str] = ("nDCG@10", "RR@10"),
                 test_measure: str = "nDCG@10", timing_queries: int | None = 50, batch_size: int = 64,
                 bf16: bool = True, n_resamples: int = 10_000, seed: int = 0, top: int = 10,
                 main_k: int | None = None, progress: bool = True,
                 known_scores: Run | None = None) -> dict[str, Any]:
    """The whole report as a dict (see ``write_report`` for the files).

    ``known_scores``: this model's scores from an earlier rerank of the same queries (e.g. the
    ``reranked.trec`` a training run writes); pairs found there are not scored again, so extending
    a top-100 evaluation to K=200 scores only ranks 101-200. Timing always scores afresh."""
    cutoffs = sorted({int(k) for k in cutoffs})
    if not cutoffs or cutoffs[0] < 1:
        raise ConfigError(f"cutoffs must be positive integers, got {cutoffs}")
    qrels = collection.qrels(split)
    first = {q: docs for q, docs in first.items() if q in qrels and q in collection.queries}
    if not first:
        raise ConfigError(f"the run has no queries judged in split {split!r}")
    max_k = cutoffs[-1]
    main_k = main_k or (100 if 100 in cutoffs else max_k)
    if main_k not in cutoffs:
        raise ConfigError(f"--compare-k {main_k} is not one of the cutoffs {cutoffs}")
    measures = list(dict.fromkeys([*measures, test_measure]))

    head = truncate(first, max_k)
    scores: dict[str, dict[str, float]] = {}
    reused = 0
    if known_scores:
        for q, docs in head.items():
            have = dict(known_scores.get(q, ()))
            scores[q] = {d: have[d] for d, _ in docs if d in have}
            reused += len(scores[q])
        head = {q: [(d, s) for d, s in docs if d not in scores[q]] for q, docs in head.items()}
        head = {q: docs for q, docs in head.items() if docs}
    scored, stats = rerank(model, collection.queries, collection.corpus, head, max_k, batch_size, bf16, progress)
    for q, docs in scored.items():
        scores.setdefault(q, {}).update(docs)
    base_pq = per_query(qrels, first, test_measure)
    first_metrics = evaluate(qrels, first, measures)

    qids = sorted(first)
    if timing_queries is not None and 0 < timing_queries < len(qids):
        timed = sorted(random.Random(seed).sample(qids, timing_queries))
    else:
        timed = qids
    timing = time_cutoffs(model, collection.queries, collection.corpus, first, cutoffs, timed, batch_size, bf16)

    rows, runs = [], {}
    for k in cutoffs:
        run_k = rerank_at(first, scores, k)
        runs[k] = run_k
        pq = per_query(qrels, run_k, test_measure)
        rows.append({"k": k, **evaluate(qrels, run_k, measures), **timing.get(k, {}),
                     "mean_candidates": float(np.mean([min(k, len(first[q])) for q in first])),
                     f"vs_first_stage_{test_measure}": compare(base_pq, pq, n_resamples, seed)})
    main_pq = per_query(qrels, runs[main_k], test_measure)
    return {
        "collection": str(collection.root), "split": split, "queries": len(first), "cutoffs": cutoffs,
        "measures": measures, "test_measure": test_measure, "first_stage": first_metrics, "sweep": rows,
        "main_k": main_k,
        "significance": compare(base_pq, main_pq, n_resamples, seed),
        "wins_losses": wins_losses(base_pq, main_pq, top, collection.queries),
        "scoring": {"pairs": stats.pairs, "seconds": stats.seconds, "pairs_per_s": stats.pairs_per_s,
                    "reused_pairs": reused, "bf16": bf16, "batch_size": batch_size,
                    "note": f"quality: all top-{max_k} pairs scored once (batched across queries); "
                            "the reranked run at K re-sorts the first stage's top-K by those scores"},
        "timing": {"method": "each K timed separately: one score_pairs call per query on its top-K candidates "
                             "(tokenisation included), after one warm-up call",
                   "queries": len(timed), "sampled": len(timed) < len(qids), "seed": seed},
        "_runs": runs,
    }


def plot_cutoffs(path: str | Path, report: Mapping[str, Any], measures: Sequence[str] = ("nDCG@10", "RR@10")) -> Path:
    """PNG: quality measures (left axis) and ms/query (right axis) against the cutoff K."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rerankforge.utils.io import save_figure

    rows = report["sweep"]
    ks = [r["k"] for r in rows]
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, m in enumerate(measures):
        color = f"C{i}"
        ax.plot(ks, [r[m] for r in rows], marker="o", color=color, label=f"reranked {m}")
        if m in report["first_stage"]:
            ax.axhline(report["first_stage"][m], color=color, ls=":", lw=1, label=f"first stage {m}")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("rerank cutoff K (first-stage candidates scored)")
    ax.set_ylabel("effectiveness")
    lines, labels = ax.get_legend_handles_labels()
    if all("ms_per_query" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot(ks, [r["ms_per_query"] for r in rows], marker="s", ls="--", color="grey", label="ms / query")
        ax2.set_ylabel("ms per query (measured)")
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    fig.legend(lines, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    ax.set_title(f"{Path(report['collection']).name} / {report['split']}: cutoff sweep ({report['queries']} queries)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))  # room for the legend below the axes
    return save_figure(fig, path)


def write_report(out_dir: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """``report.json``, ``cutoffs.png``, ``cutoffs.md`` (the table) and the reranked run at ``main_k``."""
    from rerankforge.data.trec import write_run
    from rerankforge.utils.io import atomic_write, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = report.pop("_runs", {})
    paths = {"json": out / "report.json", "plot": out / "cutoffs.png", "table": out / "cutoffs.md"}
    write_json(paths["json"], report)
    plot_cutoffs(paths["plot"], report, [m for m in report["measures"]][:2])
    tm = report["test_measure"]
    head = ["K", *report["measures"], "ms/query", "p50 ms", "p95 ms", f"Δ{tm}", "p (t)", "p (rand)", "W/L/T"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fs = report["first_stage"]
    lines.append("| first stage | " + " | ".join(f"{fs[m]:.4f}" for m in report["measures"]) + " |" + " |" * 7)
    for r in report["sweep"]:
        s = r[f"vs_first_stage_{tm}"]
        lines.append("| " + " | ".join([str(r["k"]), *(f"{r[m]:.4f}" for m in report["measures"]),
                                        *(f"{r[x]:.1f}" if x in r else "-" for x in ("ms_per_query", "ms_p50", "ms_p95")),
                                        f"{s['delta']:+.4f}", f"{s['p_t_test']:.3g}", f"{s['p_randomization']:.3g}",
                                        f"{s['wins']}/{s['losses']}/{s['ties']}"]) + " |")
    with atomic_write(paths["table"]) as fh:
        fh.write("\n".join(lines) + "\n")
    if report["main_k"] in runs:
        paths["run"] = out / f"reranked_top{report['main_k']}.trec"
        write_run(paths["run"], runs[report["main_k"]])
    report["_runs"] = runs
    return paths
