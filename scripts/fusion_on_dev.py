"""A reranker fused with BM25, the fusion weight chosen on dev queries, reported on test.

    python scripts/fusion_on_dev.py --model default --model-type bi_encoder \
        --collection ../shared/datasets/nfcorpus --out runs/nfcorpus_fusion.json

The model reranks BM25's top ``--depth`` of the ``--dev-split`` queries; α of
α·zscore(BM25) + (1 − α)·zscore(reranker) is chosen there on a 0.05 grid
(``pipelines.steps.choose_fusion_alpha``), then fixed and applied to the ``--split`` queries, whose
judgments are read only to score the result. The JSON holds BM25, pure and fused metrics, α with
its dev curve, and the paired randomisation p-value of the fused run against BM25.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="exported model directory, or a base model with --model-type")
    p.add_argument("--model-type", default=None, help="build this model type from a base encoder (e.g. bi_encoder)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--collection", required=True)
    p.add_argument("--dev-split", default="dev")
    p.add_argument("--split", default="test")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--norm", default="zscore", choices=("minmax", "zscore"))
    p.add_argument("--metric", default="nDCG@10")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from rerankforge.data.beir import Collection
    from rerankforge.eval.metrics import evaluate, per_query
    from rerankforge.eval.significance import compare
    from rerankforge.models.base import MODELS, load_reranker
    from rerankforge.pipelines.steps import choose_fusion_alpha, evaluate_reranker, first_stage_run
    from rerankforge.rerank.fusion import fuse_with_first_stage
    from rerankforge.utils.io import write_json

    t0 = time.perf_counter()
    collection = Collection(args.collection)
    model = (MODELS.get(args.model_type).from_base(args.model, max_length=args.max_length) if args.model_type
             else load_reranker(args.model))
    dev_run = first_stage_run(collection, args.dev_split, None, args.depth)
    alpha, curve = choose_fusion_alpha(model, collection, args.dev_split, dev_run, args.metric, args.norm,
                                       args.batch_size, args.bf16)
    report = evaluate_reranker(model, collection, args.split, None, args.depth, [args.metric, "RR@10"],
                               args.batch_size, args.bf16, progress=False)
    runs = report.pop("_runs")
    fused = fuse_with_first_stage(runs["first_stage"], runs["reranked"], alpha, args.norm)
    qrels = collection.qrels(args.split)
    result = {
        "model": args.model, "model_type": args.model_type, "collection": args.collection, "split": args.split,
        "depth": args.depth, "queries": report["queries"],
        "first_stage": report["first_stage"], "pure": report["reranked"],
        "fused": evaluate(qrels, fused, [args.metric, "RR@10"]),
        "fusion": {"alpha": alpha, "norm": args.norm, "chosen_on": {"split": args.dev_split, "queries": len(dev_run)},
                   "dev_pure": curve[0.0], "dev_fused": curve[alpha], "curve": {str(a): v for a, v in curve.items()}},
        "fused_vs_first_stage": compare(per_query(qrels, runs["first_stage"], args.metric),
                                        per_query(qrels, fused, args.metric)),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps({k: result[k] for k in ("first_stage", "pure", "fused")}, indent=1))
    print(f"alpha {alpha} (chosen on {len(dev_run)} {args.dev_split} queries); fused vs BM25 "
          f"p = {result['fused_vs_first_stage']['p_randomization']:.4f}")
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
