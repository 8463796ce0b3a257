"""``rerankforge rerank --model M --collection C --split S --run RUN --depth K --out OUT``.

Optional post-processing, applied in this order (each step is a library call):

1. scoring: whole documents, or ``--passage-words N [--passage-stride M] [--passage-agg maxp|firstp|sum]``
   (``rerankforge.eval.passages``);
2. ``--threshold P``: drop candidates with sigmoid(score) < P — meant for calibrated models
   (``rerankforge calibrate``), on the model's own scores (``eval.calibration.apply_threshold``);
3. ``--fusion-alpha A [--fusion-norm minmax|zscore]``: A·norm(first stage) + (1 − A)·norm(reranker)
   (``eval.fusion.fuse``);
4. ``--rrf OTHER.trec ... [--rrf-k 60]``: reciprocal-rank fusion of the result with other runs
   (``eval.fusion.reciprocal_rank_fusion``);
5. ``--mmr-lambda L [--mmr-depth N]``: MMR diversification with TF-IDF cosine between documents
   (``eval.mmr``).
"""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("rerank", help="rerank a first-stage TREC run with a trained model",
                       description=__doc__.split("\n", 1)[1].strip(),
                       formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--collection", required=True, help="BEIR collection directory")
    p.add_argument("--split", required=True, help="qrels split whose queries are reranked")
    p.add_argument("--run", required=True, help="first-stage TREC run")
    p.add_argument("--depth", type=int, default=100, help="rerank the top K of each query (default 100)")
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-bf16", action="store_true", help="score in float32")
    g = p.add_argument_group("long documents")
    g.add_argument("--passage-words", type=int, help="split documents into passages of N words")
    g.add_argument("--passage-stride", type=int, help="words between passage starts (default N/2: 50%% overlap)")
    g.add_argument("--passage-agg", choices=("maxp", "firstp", "sum"), default="maxp",
                   help="document score from its passages' scores (default maxp)")
    g = p.add_argument_group("post-processing")
    g.add_argument("--threshold", type=float, help="drop candidates with sigmoid(score) < P (calibrated models)")
    g.add_argument("--fusion-alpha", type=float, help="fuse with the first stage: A*first + (1-A)*reranker")
    g.add_argument("--fusion-norm", choices=("minmax", "zscore"), default="minmax",
                   help="per-query score normalisation before fusion (default minmax)")
    g.add_argument("--rrf", nargs="+", metavar="OTHER.trec", help="reciprocal-rank fuse the result with these runs")
    g.add_argument("--rrf-k", type=int, default=60, help="RRF constant k (default 60)")
    g.add_argument("--mmr-lambda", type=float, help="MMR diversification, 1 = pure relevance, 0 = pure novelty")
    g.add_argument("--mmr-depth", type=int, help="diversify only the top N (default: all reranked)")
    return p


def _check(args) -> None:
    from rerankforge.errors import ConfigError

    if args.threshold is not None and args.passage_words and args.passage_agg == "sum":
        raise ConfigError("--threshold needs logit scores; --passage-agg sum adds passage logits, which is not one")
    if args.fusion_alpha is not None and not 0.0 <= args.fusion_alpha <= 1.0:
        raise ConfigError(f"--fusion-alpha must be in [0, 1], got {args.fusion_alpha}")
    if args.passage_stride and not args.passage_words:
        raise ConfigError("--passage-stride needs --passage-words")


def run(args) -> int:
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run, truncate, write_run
    from rerankforge.eval.rerank import rerank
    from rerankforge.models import load_reranker

    _check(args)
    collection = Collection(args.collection)
    first = read_run(args.run, collection.queries, collection.corpus)
    qids = set(collection.qrels(args.split))
    first = truncate({q: d for q, d in first.items() if q in qids}, args.depth)
    model = load_reranker(args.model)
    if args.passage_words:
        from rerankforge.eval.passages import rerank_passages

        reranked, stats = rerank_passages(model, collection.queries, collection.corpus, first, args.depth,
                                          args.passage_words, args.passage_stride or max(1, args.passage_words // 2),
                                          args.passage_agg, args.batch_size, not args.no_bf16, progress=True)
    else:
        reranked, stats = rerank(model, collection.queries, collection.corpus, first, args.depth,
                                 args.batch_size, not args.no_bf16, progress=True)
    final, steps = reranked, []
    if args.threshold is not None:
        from rerankforge.eval.calibration import apply_threshold

        final = apply_threshold(final, args.threshold)
        kept, total = sum(len(d) for d in final.values()), sum(len(d) for d in reranked.values())
        steps.append(f"threshold {args.threshold}: kept {kept}/{total} candidates")
    if args.fusion_alpha is not None:
        from rerankforge.eval.fusion import fuse

        final = fuse(first, final, args.fusion_alpha, args.fusion_norm)
        steps.append(f"fused with the first stage (alpha={args.fusion_alpha}, {args.fusion_norm})")
    if args.rrf:
        from rerankforge.eval.fusion import reciprocal_rank_fusion

        others = [read_run(p, collection.queries, collection.corpus) for p in args.rrf]
        fused = reciprocal_rank_fusion([final, *others], k=args.rrf_k)
        final = {q: docs for q, docs in fused.items() if q in final}
        steps.append(f"RRF with {len(others)} run(s) (k={args.rrf_k})")
    if args.mmr_lambda is not None:
        from rerankforge.eval.mmr import mmr_rerank

        final = mmr_rerank(final, collection.corpus.text, args.mmr_lambda, args.mmr_depth)
        steps.append(f"MMR (lambda={args.mmr_lambda}, TF-IDF cosine, top {args.mmr_depth or 'all'})")
    write_run(args.out, final)
    unit = "passage pairs" if args.passage_words else "pairs"
    print(f"reranked {stats.queries} queries ({stats.pairs} {unit}) in {stats.seconds:.1f}s: "
          f"{stats.pairs_per_s:.1f} pairs/s, {stats.ms_per_query:.1f} ms/query -> {args.out}")
    for s in steps:
        print(f"  then {s}")
    if any(q in first for q in qids):
        from rerankforge.eval import evaluate
        from rerankforge.utils.table import metrics_table

        qrels = collection.qrels(args.split)
        rows = {"first stage": evaluate(qrels, first), "reranked": evaluate(qrels, reranked)}
        if steps:
            rows["final (post-processed)"] = evaluate(qrels, final)
        metrics_table(rows, title=f"{args.split}: top-{args.depth}")
    return 0
