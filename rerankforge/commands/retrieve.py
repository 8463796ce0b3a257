"""``rerankforge retrieve --collection DIR --split SPLIT --retriever bm25|dense|hybrid --depth K --out RUN.trec``."""

from __future__ import annotations


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.retrieve.config import RetrieveConfig

    p = sub.add_parser("retrieve", help="first-stage retrieval (BM25, dense, hybrid) into a TREC run",
                       description="Index a BEIR collection and retrieve the top-K documents for the split's "
                                   "judged queries (all queries if the split has no qrels). Prints nDCG@10 and "
                                   "R@100 when qrels exist.")
    add_config_args(p, RetrieveConfig, example="dense.index=hnsw")
    return p


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rerankforge.config import config_from_args
    from rerankforge.data.trec import write_run
    from rerankforge.pipelines.steps import retrieve
    from rerankforge.retrieve.config import RetrieveConfig

    cfg = config_from_args(RetrieveConfig, args)
    result = retrieve(cfg)
    write_run(cfg.out, result.run, tag=f"rerankforge-{cfg.retriever}")
    t = result.timings
    table = Table(title=f"{cfg.retriever} retrieval: {cfg.collection} / {cfg.split}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("queries", str(result.queries))
    table.add_row("depth", str(result.depth))
    table.add_row("index time", f"{t['index_s']:.1f} s")
    table.add_row("search time", f"{t['search_s']:.1f} s ({t['queries_per_s']:.1f} queries/s)")
    for name, value in (result.metrics or {}).items():
        table.add_row(name, f"{value:.4f}")
    if result.metrics is None:
        table.add_row("metrics", f"no qrels for split {cfg.split!r}")
    for part in getattr(result.retriever, "components", [result.retriever]):
        stats = getattr(part, "stats", None)
        if stats and stats.get("encoded_docs") is not None:
            table.add_row("documents encoded", f"{stats['encoded_docs']} in {stats['encode_seconds']:.1f} s")
            table.add_row("embedding cache", stats.get("cache") or "off")
    table.add_row("run", cfg.out)
    Console().print(table)
    return 0
