"""First stage -> rerank -> evaluate, as one call (used by train, quickstart, distil, clicks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerankforge.data.beir import Collection
from rerankforge.data.trec import Run, read_run, truncate, write_run
from rerankforge.eval.metrics import DEFAULT_MEASURES, evaluate
from rerankforge.eval.rerank import rerank
from rerankforge.models.base import Reranker, load_reranker


def first_stage_run(collection: Collection, split: str, run_path: str | Path | None, depth: int) -> Run:
    """Read ``run_path`` or, without one, retrieve BM25 top-``depth`` for the split's queries."""
    if run_path:
        return truncate(read_run(run_path, collection.queries, collection.corpus), depth)
    from rerankforge.mining import build_retriever

    retriever = build_retriever("bm25")
    retriever.index(collection.corpus)
    return retriever.search(collection.split_queries(split), depth)


def evaluate_reranker(model: Reranker | str | Path, collection: Collection | str | Path, split: str,
                      run: Run | str | Path | None = None, depth: int = 100,
                      measures: Sequence[str] = DEFAULT_MEASURES, batch_size: int = 64, bf16: bool = True,
                      out_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Rerank the first stage of ``split`` and evaluate both; optionally write runs to ``out_dir``."""
    if not isinstance(collection, Collection):
        collection = Collection(collection)
    if not isinstance(model, Reranker):
        model = load_reranker(model)
    first = run if isinstance(run, dict) else first_stage_run(collection, split, run, depth)
    first = truncate({q: d for q, d in first.items() if q in collection.qrels(split)}, depth)
    reranked, stats = rerank(model, collection.queries, collection.corpus, first, depth, batch_size, bf16, progress)
    qrels = collection.qrels(split)
    report = {
        "first_stage": evaluate(qrels, first, measures),
        "reranked": evaluate(qrels, reranked, measures),
        "rerank_speed": {"pairs": stats.pairs, "seconds": stats.seconds, "pairs_per_s": stats.pairs_per_s,
                         "ms_per_query": stats.ms_per_query},
        "split": split,
        "depth": depth,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_run(out_dir / "first_stage.trec", first, tag="first_stage")
        write_run(out_dir / "reranked.trec", reranked, tag="rerankforge")
    report["_runs"] = {"first_stage": first, "reranked": reranked}
    return report
