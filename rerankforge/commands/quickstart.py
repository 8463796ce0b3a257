"""``rerankforge quickstart --out DIR``: the whole pipeline on the bundled SciFact."""

from __future__ import annotations


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.pipelines.quickstart import QuickstartConfig

    p = sub.add_parser("quickstart", help="fine-tune and evaluate a reranker on bundled SciFact, end to end")
    add_config_args(p, QuickstartConfig, example="train.optim.epochs=2 rerank_depth=100")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.pipelines.quickstart import QuickstartConfig, run_quickstart

    run_quickstart(config_from_args(QuickstartConfig, args))
    return 0
