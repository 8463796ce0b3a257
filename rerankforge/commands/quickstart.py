"""``rerankforge quickstart --out DIR``: the whole pipeline on the bundled SciFact."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("quickstart", help="fine-tune and evaluate a reranker on bundled SciFact, end to end")
    p.add_argument("--out", required=True, help="output directory (report.json, runs, model)")
    p.add_argument("--config", help="optional YAML overriding the quickstart defaults")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.optim.epochs=2 rerank_depth=100")
    return p


def run(args) -> int:
    from rerankforge.quickstart import QuickstartConfig, run_quickstart
    from rerankforge.train.config import load_config

    cfg = load_config(args.config, args.overrides, schema=QuickstartConfig)
    run_quickstart(args.out, cfg)
    return 0
