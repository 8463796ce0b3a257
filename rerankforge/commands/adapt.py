"""``rerankforge adapt --collection DIR --out DIR [--teacher MODEL_DIR] [--queries Q.jsonl] [--minutes M]``:
a reranker for one corpus without relevance judgments (see ``rerankforge.pipelines.adapt``)."""

from __future__ import annotations

import argparse


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.pipelines import adapt
    from rerankforge.pipelines.adapt import AdaptConfig

    p = sub.add_parser("adapt", help="build a reranker for a corpus from pseudo-queries (no judgments needed)",
                       description=adapt.__doc__.split("\n", 1)[1].strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, AdaptConfig, example="train.model.type=colbert pseudo.train_queries=2000")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.pipelines.adapt import AdaptConfig, adapt
    from rerankforge.utils.table import metrics_table

    report = adapt(config_from_args(AdaptConfig, args))
    if "first_stage" in report:
        rows = {"BM25 (first stage)": report["first_stage"],
                "MiniLM bi-encoder, untrained": report["bi_encoder_zero_shot"],
                f"adapt, pure ({report['chosen']['model']} model)": report["pure"],
                f"adapt, output ({report['chosen']['output']}, alpha={report['fusion']['alpha']})": report["output"]}
        metrics_table(rows, title=f"{report['split']} (report only; choices made on pseudo-queries): "
                                  f"reranking BM25 top-{report['depth']}, p(output vs BM25) = {report['p_vs_bm25']:.4g}")
    print(f"reproduce the output: {report['rerank_command']}")
    return 0
