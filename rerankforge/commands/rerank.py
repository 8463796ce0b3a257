"""``rerankforge rerank --model M --collection C --split S --run RUN --depth K --out OUT``."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("rerank", help="rerank a first-stage TREC run with a trained model")
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--collection", required=True, help="BEIR collection directory")
    p.add_argument("--split", required=True, help="qrels split whose queries are reranked")
    p.add_argument("--run", required=True, help="first-stage TREC run")
    p.add_argument("--depth", type=int, default=100, help="rerank the top K of each query (default 100)")
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-bf16", action="store_true", help="score in float32")
    return p


def run(args) -> int:
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run, truncate, write_run
    from rerankforge.eval.rerank import rerank
    from rerankforge.models import load_reranker

    collection = Collection(args.collection)
    first = read_run(args.run, collection.queries, collection.corpus)
    qids = set(collection.qrels(args.split))
    first = truncate({q: d for q, d in first.items() if q in qids}, args.depth)
    model = load_reranker(args.model)
    reranked, stats = rerank(model, collection.queries, collection.corpus, first, args.depth,
                             args.batch_size, not args.no_bf16, progress=True)
    write_run(args.out, reranked)
    print(f"reranked {stats.queries} queries ({stats.pairs} pairs) in {stats.seconds:.1f}s: "
          f"{stats.pairs_per_s:.1f} pairs/s, {stats.ms_per_query:.1f} ms/query -> {args.out}")
    if any(q in first for q in qids):
        from rerankforge.eval import evaluate
        from rerankforge.utils.table import metrics_table

        qrels = collection.qrels(args.split)
        metrics_table({"first stage": evaluate(qrels, first), "reranked": evaluate(qrels, reranked)},
                      title=f"{args.split}: top-{args.depth}")
    return 0
