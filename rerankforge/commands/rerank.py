"""``rerankforge rerank --model M --collection C --split S --run RUN --depth K --out OUT``
(post-processing options: see ``rerankforge.rerank.apply``)."""

from __future__ import annotations

import argparse


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.rerank import apply
    from rerankforge.rerank.apply import RerankConfig

    p = sub.add_parser("rerank", help="rerank a first-stage TREC run with a trained model",
                       description=apply.__doc__.split("\n", 1)[1].strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, RerankConfig, example="fusion_alpha=0.3")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.data.trec import write_run
    from rerankforge.rerank.apply import RerankConfig, rerank_collection
    from rerankforge.utils.table import metrics_table

    cfg = config_from_args(RerankConfig, args)
    result = rerank_collection(cfg)
    write_run(cfg.out, result.final)
    stats = result.stats
    unit = "passage pairs" if cfg.passage_words else "pairs"
    print(f"reranked {stats.queries} queries ({stats.pairs} {unit}) in {stats.seconds:.1f}s: "
          f"{stats.pairs_per_s:.1f} pairs/s, {stats.ms_per_query:.1f} ms/query -> {cfg.out}")
    for s in result.steps:
        print(f"  then {s}")
    if result.metrics:
        metrics_table(result.metrics, title=f"{cfg.split}: top-{cfg.depth}")
    return 0
