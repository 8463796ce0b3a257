"""The quickstart: BM25 -> mine -> train -> rerank -> evaluate on the bundled SciFact.

Every number it prints is measured in the run. The fused figure's α is chosen on training
queries held out from training, never on the test queries; the pure reranker is reported beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rerankforge.config import option
from rerankforge.train.config import TrainConfig


def _quickstart_train() -> TrainConfig:
    # Chosen on the dev protocol of scripts/quickstart_dev.py (120 held-out SciFact *train*
    # queries, rule fixed beforehand: reranker alone above BM25, fused >= BM25 + 0.03, < 15 min):
    # the MiniLM-L6 bi-encoder starts near BM25 (a cross-encoder head starts from nothing and
    # stayed far below it in one CPU epoch: 0.4928 alone), scores each document once, and
    # in-batch negatives give every query 63 negatives for the cost of 3 hard ones.
    cfg = TrainConfig()
    cfg.model.type = "bi_encoder"
    cfg.model.max_length = 256
    cfg.model.attention_dropout = 0.0
    cfg.data.group_size = 4
    cfg.data.max_positives = 1
    cfg.in_batch_negatives = True
    cfg.optim.lr = 5e-5
    cfg.optim.epochs = 1
    cfg.optim.batch_size = 16
    cfg.optim.max_minutes = 7.0
    return cfg


@dataclass
class QuickstartConfig:
    #: BEIR collection directory; null uses the SciFact copy bundled with the package
    collection: Optional[str] = None
    #: output directory (report.json, runs, model)
    output_dir: str = option("runs/quickstart", flag="--out", help="output directory (report.json, runs, model)")
    train_split: str = "train"
    test_split: str = "test"
    #: BM25 depth mined for negatives
    mine_depth: int = 100
    negatives: int = 15
    #: training queries kept out of training to choose the fusion weight α
    holdout_queries: int = 80
    #: test candidates reranked per query
    rerank_depth: int = 100
    fusion_norm: str = "zscore"
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "RR@10", "R@100", "AP@100"])
    seed: int = 13
    train: TrainConfig = field(default_factory=_quickstart_train)


def run_quickstart(cfg: QuickstartConfig | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """The whole pipeline; every figure is measured in the run. Returns (and writes) the report."""
    from rerankforge.config import to_yaml
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import write_run
    from rerankforge.eval import evaluate
    from rerankforge.mining.config import MineConfig
    from rerankforge.mining.negatives import NegativePolicy
    from rerankforge.models import load_reranker
    from rerankforge.pipelines import steps
    from rerankforge.rerank import rerank
    from rerankforge.rerank.fusion import choose_alpha, fuse_with_first_stage as fuse
    from rerankforge.train import train
    from rerankforge.train.collapse import score_spread
    from rerankforge.utils.io import atomic_write, write_json
    from rerankforge.utils.table import metrics_table

    cfg = cfg or QuickstartConfig()
    out = Path(out or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "quickstart_config.yaml") as fh:
        fh.write(to_yaml(cfg))
    t0 = t = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 2)
        print(f"[{timings[name]:7.1f}s] {name}")
        t = time.perf_counter()

    collection = Collection(cfg.collection or "bundled:scifact")
    mined = steps.mine(MineConfig(
        collection=str(collection.root), split=cfg.train_split, depth=cfg.mine_depth, out=str(out / "groups.jsonl"),
        holdout_queries=cfg.holdout_queries, progress=False,
        policy=NegativePolicy(negatives=cfg.negatives, rank_min=1, rank_max=cfg.mine_depth, seed=cfg.seed)),
        collection)
    holdout = mined.report["source"].get("holdout_queries", [])
    lap(f"BM25 index + mined {mined.groups_written} groups ({cfg.negatives} BM25 negatives each) -> {mined.path}")

    tcfg = cfg.train
    tcfg.output_dir = str(out / "train")
    tcfg.data.train_groups = str(mined.path)
    model_dir = train(tcfg)
    lap(f"trained -> {model_dir}")

    model = load_reranker(model_dir)
    qrels_train = collection.qrels(cfg.train_split)
    held_first = steps.first_stage(collection, {q: collection.queries[q] for q in holdout}, "bm25", cfg.rerank_depth)
    qrels_test = collection.qrels(cfg.test_split)
    first = steps.first_stage(collection, cfg.test_split, "bm25", max(cfg.rerank_depth, 100))
    write_run(out / "bm25_test.trec", first, tag="bm25")
    # One scoring pass over the held-out and the test candidates: a document both retrieve is
    # encoded once (bi-encoders and ColBERT cache per distinct text). Only the held-out half is
    # read to choose alpha; the test half is evaluated after.
    both = {f"holdout\x1f{q}": docs for q, docs in held_first.items()} | {f"test\x1f{q}": docs for q, docs in first.items()}
    texts = {f"holdout\x1f{q}": collection.queries[q] for q in held_first}
    texts |= {f"test\x1f{q}": collection.queries[q] for q in first if q in collection.queries}
    scored, stats = rerank(model, texts, collection.corpus, both, cfg.rerank_depth, progress=True)
    held_reranked = {k.split("\x1f", 1)[1]: v for k, v in scored.items() if k.startswith("holdout\x1f")}
    reranked = {k.split("\x1f", 1)[1]: v for k, v in scored.items() if k.startswith("test\x1f")}
    lap(f"reranked BM25 top-{cfg.rerank_depth} of {len(held_first)} held-out train + {len(first)} test queries: "
        f"{stats.pairs} pairs, {stats.pairs_per_s:.1f} pairs/s")
    held_qrels = {q: qrels_train[q] for q in held_first}
    alpha, curve = choose_alpha(held_first, held_reranked,
                                lambda r: evaluate(held_qrels, r, ["nDCG@10"])["nDCG@10"], norm=cfg.fusion_norm)
    lap(f"chose fusion alpha={alpha} on {len(held_first)} held-out training queries")

    # Documents below the rerank depth keep their BM25 order underneath the reranked head.
    tail = {q: [(d, s - 1e6) for d, s in docs[cfg.rerank_depth:]] for q, docs in first.items()}
    reranked_full = {q: reranked.get(q, []) + tail[q] for q in first}
    fused = fuse(first, reranked, alpha, cfg.fusion_norm)
    fused_full = {q: fused.get(q, []) + tail[q] for q in first}
    write_run(out / "reranked_test.trec", reranked_full, tag="rerankforge")
    write_run(out / "fused_test.trec", fused_full, tag="rerankforge-fused")

    pure = evaluate(qrels_test, reranked_full, cfg.measures)
    fused_metrics = evaluate(qrels_test, fused_full, cfg.measures)
    report = {
        "first_stage": evaluate(qrels_test, first, cfg.measures),
        # The quickstart's output run: BM25 fused with the reranker at the α chosen on held-out
        # training queries (α = 0 is the pure reranker). Both parts are reported beside it.
        "reranked": fused_metrics,
        "pure_reranker": pure,
        "fusion": {"alpha": alpha, "norm": cfg.fusion_norm,
                   "chosen_on": f"{len(held_first)} held-out {cfg.train_split} queries", "curve": curve},
        "collection": str(collection.root),
        "split": cfg.test_split,
        "rerank_depth": cfg.rerank_depth,
        "rerank_speed": {"queries": stats.queries, "pairs": stats.pairs, "seconds": round(stats.seconds, 2), "pairs_per_s": stats.pairs_per_s},
        "score_spread": score_spread(reranked, what="the quickstart's reranker"),
        "train_summary": _train_summary(Path(tcfg.output_dir)),
        "timings_s": timings,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "model_dir": str(model_dir),
    }
    write_json(out / "report.json", report)
    metrics_table({"BM25 (first stage)": report["first_stage"], "reranker alone (pure)": pure,
                   f"reranked: fused, alpha={alpha}": fused_metrics},
                  title=f"{collection.root.name} {cfg.test_split}: reranking BM25 top-{cfg.rerank_depth}")
    print(f"report -> {out / 'report.json'}  (total {report['total_seconds']}s)")
    return report


def _train_summary(out: Path) -> dict[str, Any]:
    import json

    path = out / "train_summary.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("global_step", "pairs", "train_seconds", "pairs_per_s", "fitted_steps", "collapse")
            if k in data}
