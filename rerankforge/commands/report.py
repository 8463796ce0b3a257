"""``rerankforge report --model M --collection C --split S --run RUN.trec --out DIR``: cutoff sweep,
significance against the first stage, per-query wins and losses."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "report", help="reranking report: cutoff sweep (quality + ms/query), significance, wins/losses",
        description="Scores the top-max(K) once for quality; times each K separately on --timing-queries sampled "
                    "queries. Writes DIR/report.json, DIR/cutoffs.png, DIR/cutoffs.md and the reranked run at "
                    "--compare-k.")
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--collection", required=True, help="BEIR collection directory")
    p.add_argument("--split", required=True, help="qrels split")
    p.add_argument("--run", required=True, help="first-stage TREC run (at least max(K) deep)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--cutoffs", type=int, nargs="+", default=[10, 20, 50, 100, 200], help="K values (default 10 20 50 100 200)")
    p.add_argument("--measures", nargs="+", default=["nDCG@10", "RR@10"], help="ir-measures strings")
    p.add_argument("--test-measure", default="nDCG@10", help="per-query measure for significance and wins/losses")
    p.add_argument("--compare-k", type=int, help="cutoff whose wins/losses are listed (default 100 if swept, else max K)")
    p.add_argument("--timing-queries", type=int, default=50, help="queries timed per K (0: all; default 50)")
    p.add_argument("--resamples", type=int, default=10000, help="randomisation-test resamples (default 10000)")
    p.add_argument("--top", type=int, default=10, help="biggest wins/losses listed (default 10)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-bf16", action="store_true", help="score in float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scores", metavar="RUN.trec",
                   help="this model's scores from an earlier rerank of the same queries (e.g. a training run's "
                        "reranked.trec): pairs found there are reused instead of scored again")
    return p


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run
    from rerankforge.eval.cutoff import cutoff_sweep, write_report
    from rerankforge.models import load_reranker

    collection = Collection(args.collection)
    first = read_run(args.run, collection.queries, collection.corpus)
    model = load_reranker(args.model)
    known = read_run(args.scores, collection.queries, collection.corpus) if args.scores else None
    rep = cutoff_sweep(model, collection, args.split, first, args.cutoffs, args.measures, args.test_measure,
                       args.timing_queries or None, args.batch_size, not args.no_bf16, args.resamples, args.seed,
                       args.top, args.compare_k, known_scores=known)
    if args.scores:
        rep["scoring"]["reused_from"] = args.scores
    paths = write_report(args.out, rep)

    tm = rep["test_measure"]
    table = Table(title=f"{collection.root.name} / {args.split}: reranking cutoff sweep ({rep['queries']} queries)")
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
          + (f"; {rep['scoring']['reused_pairs']} pairs reused from {args.scores}" if args.scores else ""))
    print(f"report -> {paths['json']}, plot -> {paths['plot']}")
    return 0
