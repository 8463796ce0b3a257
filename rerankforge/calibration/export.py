"""Fit a calibration on one split, measure it on another, export the calibrated checkpoint.

Layout of ``out_dir``::

    out_dir/calibration.json   {"method", "a", "b", "fit_split", "eval_split", "before", "after", ...}
    out_dir/reliability.png    reliability diagram on the eval split, before and after
    out_dir/model/             the calibrated model (load_reranker / sentence-transformers), with README.md

Cross-encoders get ``(a, b)`` folded into the classification head, so the checkpoint's plain
sigmoid is the calibrated probability in any library. Other model types (ColBERT, decoders) keep
their weights and carry ``calibration: {a, b, ...}`` in ``rerankforge.json``; ``load_reranker``
applies it in ``score_pairs`` (``Reranker.set_calibration``).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from rerankforge.data.beir import Collection
from rerankforge.data.trec import Run, read_run, truncate
from rerankforge.errors import ConfigError
from rerankforge.calibration.fit import (METHODS, calibration_metrics, compose, fit_calibration, fold_into_head,
                                          labelled_pairs, reliability_diagram, score_pairs_of)
from rerankforge.models.base import load_reranker
from rerankforge.utils.io import atomic_save_pretrained, write_json

log = logging.getLogger(__name__)


def _first_stage(collection: Collection, splits: list[str], run: str | Path | Run | None, depth: int) -> Run:
    if isinstance(run, dict):
        return truncate(run, depth)
    if run:
        return truncate(read_run(run, collection.queries, collection.corpus), depth)
    from rerankforge.retrieve import build_retriever

    bm25 = build_retriever("bm25")
    bm25.index(collection.corpus)
    queries = {q: t for s in splits for q, t in collection.split_queries(s).items()}
    return bm25.search(queries, depth)


def calibrate_reranker(model: str | Path, collection: str | Path | Collection, fit_split: str, eval_split: str,
                       out_dir: str | Path, method: str = "platt", run: str | Path | Run | None = None,
                       fit_run: str | Path | Run | None = None, depth: int = 100, rel_threshold: int = 1,
                       max_fit_queries: int | None = None, n_bins: int = 15, batch_size: int = 64,
                       bf16: bool = False, seed: int = 0, command: str | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Returns the ``calibration.json`` dict (also written to ``out_dir``).

    ``run``: first stage for ``eval_split`` (and ``fit_split`` unless ``fit_run`` is given);
    without one, BM25 top-``depth`` is retrieved on the fly."""
    if fit_split == eval_split:
        raise ConfigError(f"fit and eval split are both {fit_split!r}: calibration must be measured on held-out queries")
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    collection = collection if isinstance(collection, Collection) else Collection(collection)
    out_dir = Path(out_dir)
    model_dir = Path(model)
    reranker = load_reranker(model_dir)
    previous = reranker.calibration

    eval_first = _first_stage(collection, [eval_split] + ([] if fit_run else [fit_split]), run, depth)
    fit_first = _first_stage(collection, [fit_split], fit_run, depth) if fit_run else eval_first
    fit_qrels, eval_qrels = collection.qrels(fit_split), collection.qrels(eval_split)
    overlap = set(fit_qrels) & set(eval_qrels)
    if overlap:
        raise ConfigError(f"splits {fit_split!r} and {eval_split!r} share {len(overlap)} queries "
                          f"(e.g. {sorted(overlap)[0]!r}); calibration must be measured on held-out queries")
    fit_qids = [q for q in fit_qrels if q in fit_first]
    if max_fit_queries and len(fit_qids) > max_fit_queries:
        keep = set(random.Random(seed).sample(fit_qids, max_fit_queries))
        fit_qids = [q for q in fit_qids if q in keep]
    fit = labelled_pairs(fit_first, fit_qrels, depth, rel_threshold, fit_qids)
    ev = labelled_pairs(eval_first, eval_qrels, depth, rel_threshold)
    for name, pairs, split in (("fit", fit, fit_split), ("eval", ev, eval_split)):
        if len(pairs) == 0:
            raise ConfigError(f"no {name} pairs: the run has no candidates for the judged queries of split {split!r}")
    log.info("scoring %d fit pairs (%s) and %d eval pairs (%s)", len(fit), fit_split, len(ev), eval_split)
    score_pairs_of(reranker, fit, collection.queries, collection.corpus, batch_size, bf16, progress)
    score_pairs_of(reranker, ev, collection.queries, collection.corpus, batch_size, bf16, progress)

    cal = fit_calibration(fit.scores, fit.labels, method)
    if cal.a <= 0:
        log.warning("fitted a = %.4g <= 0: on split %r the model's scores do not increase with relevance; "
                    "the calibrated model would reverse its ranking", cal.a, fit_split)
    before, after = calibration_metrics(ev.scores, ev.labels, n_bins), calibration_metrics(cal.logits(ev.scores), ev.labels, n_bins)
    a, b = compose(cal, previous)
    record: dict[str, Any] = {
        **cal.to_dict(), "fit_split": fit_split, "eval_split": eval_split, "before": before, "after": after,
        "fit": {"before": calibration_metrics(fit.scores, fit.labels, n_bins),
                "after": calibration_metrics(cal.logits(fit.scores), fit.labels, n_bins)},
        "rel_threshold": rel_threshold, "depth": depth, "n_bins": n_bins,
        "fit_queries": len(set(fit.query_ids)), "fit_pairs": len(fit), "fit_positive_rate": float(fit.labels.mean()),
        "eval_queries": len(set(ev.query_ids)), "eval_pairs": len(ev), "eval_positive_rate": float(ev.labels.mean()),
        "scored_in": "bf16" if bf16 else "fp32", "source_model": str(model_dir),
    }
    # the other method on the same scores costs nothing and answers "would it have done better?"
    record["other_methods"] = {}
    for other in METHODS:
        if other != method:
            alt = fit_calibration(fit.scores, fit.labels, other)
            record["other_methods"][other] = {**alt.to_dict(), "after": calibration_metrics(alt.logits(ev.scores), ev.labels, n_bins)}
    if cal.a <= 0:
        record["warning"] = "a <= 0: scores anti-correlated with relevance on the fit split; ranking reversed"
    if previous and not previous.get("folded_into_head"):
        record["a"], record["b"] = a, b  # one transform relative to the model's raw head
        record["composed_with"] = previous
    probe = slice(0, min(len(ev), 64))
    probe_q = [collection.queries[q] for q in ev.query_ids[probe]]
    probe_d = [collection.corpus.text(d) for d in ev.doc_ids[probe]]
    probe_raw = reranker.score_pairs(probe_q, probe_d, batch_size=batch_size, bf16=False)
    folded = reranker.model_type == "cross_encoder" and fold_into_head(reranker.model, a, b)
    meta_record = {k: v for k, v in record.items() if k not in ("fit", "other_methods")} | {"folded_into_head": folded}
    if previous and previous.get("folded_into_head"):
        meta_record["composed_with"] = previous
    reranker.set_calibration(meta_record)
    exported = out_dir / "model"
    atomic_save_pretrained(reranker, exported)

    # Reload what was written and check it scores a·s + b (guards the fold and the meta hook).
    got = load_reranker(exported).score_pairs(probe_q, probe_d, batch_size=batch_size, bf16=False)
    want = cal.logits(probe_raw)
    record["export_check_max_abs_diff"] = float(np.max(np.abs(got - want)))
    record["folded_into_head"] = folded
    record["model_dir"] = str(exported)

    reliability_diagram(out_dir / "reliability.png",
                        {"before (sigmoid of raw score)": (expit(ev.scores), ev.labels),
                         f"after ({method})": (cal.probs(ev.scores), ev.labels)},
                        n_bins, title=f"{collection.root.name} / {eval_split}: top-{depth}, {len(ev)} pairs")
    write_json(out_dir / "calibration.json", record)

    from rerankforge.export.card import read_card_info, write_model_card

    info = read_card_info(model_dir)
    info["model_type"] = reranker.model_type
    info.setdefault("base_model", f"fine-tuned reranker at {model_dir}")
    info["calibration"] = meta_record
    if command:
        info["commands"] = list(info.get("commands", [])) + [command]
    write_model_card(exported, info)
    return record
