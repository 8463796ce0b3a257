"""``rerankforge report --model M --collection C --split S --run RUN.trec --out DIR``: cutoff sweep,
significance against the first stage, per-query wins and losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rerankforge.config import option, require


@dataclass
class ReportConfig:
    model: Optional[str] = option(None, flag="--model", help="exported model directory")
    collection: Optional[str] = option(None, flag="--collection", help="BEIR collection directory")
    split: Optional[str] = option(None, flag="--split", help="qrels split")
    run: Optional[str] = option(None, flag="--run", help="first-stage TREC run (at least max(K) deep)")
    out: Optional[str] = option(None, flag="--out", help="output directory")
    cutoffs: list[int] = option(factory=lambda: [10, 20, 50, 100, 200], flag="--cutoffs", help="K values")
    measures: list[str] = option(factory=lambda: ["nDCG@10", "RR@10"], flag="--measures", help="ir-measures strings")
    test_measure: str = option("nDCG@10", flag="--test-measure",
                               help="per-query measure for significance and wins/losses")
    compare_k: Optional[int] = option(None, flag="--compare-k",
                                      help="cutoff whose wins/losses are listed (default 100 if swept, else max K)")
    timing_queries: int = option(50, flag="--timing-queries", help="queries timed per K (0: all)")
    resamples: int = option(10000, flag="--resamples", help="randomisation-test resamples")
    top: int = option(10, flag="--top", help="biggest wins/losses listed")
    batch_size: int = option(64, flag="--batch-size", help="pairs per forward pass")
    bf16: bool = option(True, flag="--no-bf16", help="score in float32")
    seed: int = option(0, flag="--seed", help="sampling seed")
    scores: Optional[str] = option(None, flag="--scores", metavar="RUN.trec",
                                   help="this model's scores from an earlier rerank of the same queries (e.g. a "
                                        "training run's reranked.trec): pairs found there are reused")

    def validate(self) -> None:
        from rerankforge.errors import ConfigError

        require(self, "model", "collection", "split", "run", "out")
        if not self.cutoffs or min(self.cutoffs) < 1:
            raise ConfigError(f"cutoffs must be >= 1, got {self.cutoffs}")


def add_parser(sub):
    from rerankforge.config import add_config_args

    p = sub.add_parser(
        "report", help="reranking report: cutoff sweep (quality + ms/query), significance, wins/losses",
        description="Scores the top-max(K) once for quality; times each K separately on --timing-queries sampled "
                    "queries. Writes DIR/report.json, DIR/cutoffs.png, DIR/cutoffs.md and the reranked run at "
                    "--compare-k.")
    add_config_args(p, ReportConfig, example="cutoffs=[10,50]")
    return p


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rerankforge.config import config_from_args
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run
    from rerankforge.eval.cutoff import cutoff_sweep, write_report
    from rerankforge.models import load_reranker

    cfg = config_from_args(ReportConfig, args)
    collection = Collection(cfg.collection)
    first = read_run(cfg.run, collection.queries, collection.corpus)
    model = load_reranker(cfg.model)
    known = read_run(cfg.scores, collection.queries, collection.corpus) if cfg.scores else None
    rep = cutoff_sweep(model, collection, cfg.split, first, cfg.cutoffs, cfg.measures, cfg.test_measure,
                       cfg.timing_queries or None, cfg.batch_size, cfg.bf16, cfg.resamples, cfg.seed,
                       cfg.top, cfg.compare_k, known_scores=known)
    if cfg.scores:
        rep["scoring"]["reused_from"] = cfg.scores
    paths = write_report(cfg.out, rep)

    tm = rep["test_measure"]
    table = Table(title=f"{collection.root.name} / {cfg.split}: reranking cutoff sweep ({rep['queries']} queries)")
    for col in ["K", *rep["measures"], "ms/query", "p95 ms", f"Δ{tm}", "p (t)", "p (rand)", "W/L/T"]:
        table.add_column(col, justify="right")
    table.add_row("first stage", *(f"{rep['first_stage'][m]:.4f}" for m in rep["measures"]), *["-"] * 6)
    for r in rep["sweep"]:
        s = r[f"vs_first_stage_{tm}"]
        table.add_row(str(r["k"]), *(f"{r[m]:.4f}" for m in rep["measures"]),
                      f"{r.get('ms_per_query', float('nan')):.1f}", f"{r.get('ms_p95', float('nan')):.1f}",
                      f"{s['delta']:+.4f}", f"{s['p_t_test']:.3g}", f"{s['p_randomization']:.3g}",
                      f"{s['wins']}/{s['losses']}/{s['ties']}")
    Console().print(table)
    wl = rep["wins_losses"]
    print(f"K={rep['main_k']}: {wl['wins']} wins, {wl['losses']} losses, {wl['ties']} ties on {tm}")
    for label, rows in (("win", wl["biggest_wins"][:5]), ("loss", wl["biggest_losses"][:5])):
        for r in rows:
            print(f"  {label:4s} {r['query_id']}: {r['a']:.3f} -> {r['b']:.3f} ({r['delta']:+.3f})  "
                  f"{r.get('query', '')[:70]}")
    print(f"timing: {rep['timing']['queries']} queries per K; scoring {rep['scoring']['pairs']} pairs took "
          f"{rep['scoring']['seconds']:.1f}s ({rep['scoring']['pairs_per_s']:.1f} pairs/s)"
          + (f"; {rep['scoring']['reused_pairs']} pairs reused from {cfg.scores}" if cfg.scores else ""))
    print(f"report -> {paths['json']}, plot -> {paths['plot']}")
    return 0
