"""``rerankforge calibrate --model M --collection C --run RUN --fit-split S1 --eval-split S2 --method platt --out DIR``."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "calibrate", help="fit Platt/temperature scaling on held-out queries and export a calibrated checkpoint",
        description="Fit p = sigmoid(a*s + b) on the fit split, report ECE/Brier/log-loss before and after on the "
                    "eval split, and write DIR/calibration.json, DIR/reliability.png and the calibrated model to "
                    "DIR/model (cross-encoders: folded into the head; other types: applied by load_reranker).")
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--collection", required=True, help="BEIR collection directory")
    p.add_argument("--run", help="first-stage TREC run covering the eval split (and the fit split unless --fit-run); "
                                 "default: BM25 top-depth retrieved on the fly")
    p.add_argument("--fit-run", help="first-stage run for the fit split, if different from --run")
    p.add_argument("--fit-split", required=True, help="qrels split the calibration is fitted on")
    p.add_argument("--eval-split", required=True, help="held-out qrels split it is measured on")
    p.add_argument("--method", choices=("platt", "temperature"), default="platt")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--depth", type=int, default=100, help="candidates per query: the run's top K (default 100)")
    p.add_argument("--rel-threshold", type=int, default=1, help="grade >= this counts as relevant (default 1)")
    p.add_argument("--max-fit-queries", type=int, help="fit on a random sample of this many fit-split queries")
    p.add_argument("--bins", type=int, default=15, help="ECE / reliability-diagram bins (default 15)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bf16", action="store_true", help="score in bf16 autocast (default float32)")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args) -> int:
    from rerankforge.export.calibrated import calibrate_reranker
    from rerankforge.export.card import cli_command
    from rerankforge.utils.table import metrics_table

    rec = calibrate_reranker(args.model, args.collection, args.fit_split, args.eval_split, args.out, args.method,
                             run=args.run, fit_run=args.fit_run, depth=args.depth, rel_threshold=args.rel_threshold,
                             max_fit_queries=args.max_fit_queries, n_bins=args.bins, batch_size=args.batch_size,
                             bf16=args.bf16, seed=args.seed, command=cli_command("calibrate", args))
    rows = {"before (sigmoid of raw score)": rec["before"], f"after ({rec['method']}, exported)": rec["after"]}
    rows.update({f"after ({m}, not exported)": alt["after"] for m, alt in rec.get("other_methods", {}).items()})
    metrics_table(rows,
                  title=f"{args.eval_split}: {rec['eval_pairs']} pairs from {rec['eval_queries']} queries "
                        f"(fit on {args.fit_split}: {rec['fit_pairs']} pairs)")
    where = "folded into the classification head" if rec["folded_into_head"] else "stored in rerankforge.json"
    print(f"a = {rec['a']:.6g}, b = {rec['b']:.6g} ({where}); export check max |diff| = "
          f"{rec['export_check_max_abs_diff']:.2g}")
    print(f"calibrated model -> {rec['model_dir']}; calibration.json, reliability.png -> {args.out}")
    return 0
