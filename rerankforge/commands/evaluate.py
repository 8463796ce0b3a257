"""``rerankforge evaluate --collection C --split S --run A.trec [--run B.trec ...] [--json OUT]``."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("evaluate", help="evaluate TREC runs with ir-measures")
    p.add_argument("--collection", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--run", action="append", required=True, help="TREC run (repeatable)")
    p.add_argument("--measures", nargs="+", default=None,
                   help="ir-measures strings (default nDCG@10 RR@10 R@100 AP@100)")
    p.add_argument("--json", help="write {run file name: {metric: value}} here")
    return p


def run(args) -> int:
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run
    from rerankforge.eval import DEFAULT_MEASURES, evaluate
    from rerankforge.utils.io import write_json
    from rerankforge.utils.table import metrics_table

    collection = Collection(args.collection)
    qrels = collection.qrels(args.split)
    measures = args.measures or list(DEFAULT_MEASURES)
    results = {}
    for path in args.run:
        results[Path(path).name] = evaluate(qrels, read_run(path, collection.queries, collection.corpus), measures)
    metrics_table(results, title=f"{collection.root.name} / {args.split}")
    if args.json:
        write_json(args.json, results)
    return 0
