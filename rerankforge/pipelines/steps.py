"""The shared steps every verb and pipeline is composed of, each defined once:

    first stage (index + search) -> mine -> label -> train -> rerank -> evaluate

``quickstart``, ``distill``, ``clicks experiment``, ``adapt`` and the command-line verbs call
these functions; none of them builds a retriever, mines or reranks on its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rerankforge.data.beir import Collection, Qrels, collection_file
from rerankforge.data.trec import Run, read_run, truncate, write_run
from rerankforge.errors import ConfigError
from rerankforge.eval.metrics import DEFAULT_MEASURES, evaluate, per_query
from rerankforge.eval.significance import compare
from rerankforge.mining.config import MineConfig
from rerankforge.retrieve.config import RetrieveConfig, RetrieverConfig, build_retriever_from_config

log = logging.getLogger(__name__)

CollectionLike = Collection | str | Path


# ------------------------------------------------------------------------------ first stage
def index(collection: CollectionLike, retriever: str | RetrieverConfig = "bm25", progress: bool = False):
    """The collection indexed by ``retriever`` (a registry name or a :class:`RetrieverConfig`).

    Built once per collection object and retriever settings: a pipeline that searches train and
    test queries, or mines and then evaluates, indexes the corpus a single time."""
    collection = Collection.of(collection)
    cfg = retriever if isinstance(retriever, RetrieverConfig) else RetrieverConfig(retriever=str(retriever))
    cache = collection.__dict__.setdefault("_indexes", {})
    key = json.dumps(cfg.key(), sort_keys=True)
    if key not in cache:
        built = build_retriever_from_config(cfg, show_progress=progress)
        built.index(collection.documents)
        cache[key] = built
    return cache[key]


def first_stage(collection: CollectionLike, queries: str | Mapping[str, str], retriever: str | RetrieverConfig = "bm25",
                depth: int = 100, progress: bool = False) -> Run:
    """Top-``depth`` documents for ``queries`` (a qrels split name: its judged queries; or a mapping)."""
    collection = Collection.of(collection)
    if isinstance(queries, str):
        queries = collection.split_queries(queries)
    return index(collection, retriever, progress).search(queries, depth)


@dataclass
class RetrievalResult:
    run: Run
    retriever: Any
    queries: int
    depth: int
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] | None = None


def retrieve(cfg: RetrieveConfig) -> RetrievalResult:
    """Index the collection and search the split's judged queries (all queries when the split has
    no qrels); with qrels, nDCG@10 and R@100 of the run."""
    collection = Collection(cfg.collection)
    t0 = time.perf_counter()
    retriever = index(collection, cfg, cfg.progress)
    t_index = time.perf_counter() - t0
    qrels = collection.qrels(cfg.split) if collection.has_split(cfg.split) else None
    queries = {q: collection.queries[q] for q in qrels} if qrels is not None else collection.queries
    depth = cfg.depth if cfg.depth is not None else 100
    t1 = time.perf_counter()
    run = retriever.search(queries, depth)
    t_search = time.perf_counter() - t1
    metrics = evaluate(qrels, run, ("nDCG@10", "R@100")) if qrels is not None else None
    return RetrievalResult(run, retriever, len(queries), depth,
                           {"index_s": t_index, "search_s": t_search,
                            "queries_per_s": len(queries) / max(t_search, 1e-9)}, metrics)


# ------------------------------------------------------------------------------------ mining
@dataclass
class MineResult:
    path: Path
    report: dict[str, Any]
    reused: bool = False

    @property
    def groups_written(self) -> int:
        return int(self.report["groups_written"])


def mine(cfg: MineConfig, collection: Collection | None = None) -> MineResult:
    """Mine ``cfg.out`` (groups JSONL: the split's judged queries, then the pseudo-queries) and
    write its report beside it (``<out>.report.json`` unless ``cfg.report``). Pass the open
    ``collection`` of ``cfg.collection`` to reuse its indexes."""
    from rerankforge.data.groups import write_groups
    from rerankforge.mining.negatives import NegativeMiner
    from rerankforge.mining.report import build_report, report_path
    from rerankforge.utils.io import write_json

    if not cfg.out:
        raise ConfigError("no output given (--out GROUPS.jsonl)")
    if not cfg.collection:
        raise ConfigError("no collection given (--collection DIR or 'collection:' in the config)")
    if not cfg.split:
        raise ConfigError("no split given (--split SPLIT)")
    collection = collection or Collection(cfg.collection)
    policy = cfg.policy
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source: dict[str, Any] = {"collection": str(collection.root), "split": cfg.split}
    qrels = collection.qrels(cfg.split)
    if cfg.max_queries:
        qrels = dict(list(qrels.items())[: cfg.max_queries])
    held = holdout_ids(qrels, cfg.holdout_queries, policy.seed)
    if held:
        qrels = {q: d for q, d in qrels.items() if q not in held}
        source["holdout_queries"] = sorted(held)
    sources = [(collection.queries, qrels)] + _pseudo_sources(collection, cfg.pseudo, source)
    retriever = None
    if cfg.run:
        run = read_run(cfg.run, None, None)
        if not any(q in qrels for q in run):
            raise ConfigError(f"{cfg.run}: none of its {len(run)} queries is judged in split {cfg.split!r} "
                              f"of {collection.root}")
        source["run"] = str(cfg.run)
        searches: list[Run | Iterator[Run]] = [run]
    else:
        depth = cfg.search_depth
        if depth < policy.rank_max:
            log.warning("depth %d < rank_max %d: negatives come from the top %d only", depth, policy.rank_max, depth)
        retriever = index(collection, cfg, cfg.progress)
        timings["index_s"] = time.perf_counter() - t0
        source.update(retriever=retriever.config(), depth=depth)
        searches = [retriever.iter_search({q: qs[q] for q in qr if q in qs}, depth, progress=cfg.progress)
                    for qs, qr in sources]
    collected: Run = {}
    if cfg.save_run and not cfg.run:
        searches = [_collecting(s, collected) for s in searches]
    miner = NegativeMiner(policy, collection.documents, retriever=retriever, with_text=cfg.text)
    t2 = time.perf_counter()
    groups = (g for (qs, qr), runs in zip(sources, searches) for g in miner.mine(qs, qr, runs))
    n = write_groups(cfg.out, groups)
    timings["retrieve_and_mine_s"] = time.perf_counter() - t2
    if cfg.save_run and not cfg.run:
        write_run(cfg.save_run, collected, tag=f"rerankforge-{retriever.name}")
        source["saved_run"] = str(cfg.save_run)
    timings["total_s"] = time.perf_counter() - t0
    report = build_report(miner.stats, policy, source=source, out=cfg.out, timings=timings)
    report["groups_written"] = n
    path = Path(cfg.report) if cfg.report else report_path(cfg.out)
    write_json(path, report)
    report["report_path"] = str(path)
    return MineResult(Path(cfg.out), report)


def holdout_ids(qrels: Mapping[str, Any], n: int, seed: int) -> set[str]:
    """``n`` query ids of ``qrels`` drawn reproducibly by ``seed`` (mining leaves them out)."""
    if not n:
        return set()
    import random

    qids = sorted(qrels)
    random.Random(seed).shuffle(qids)
    return set(qids[:n])


def _pseudo_sources(collection: Collection, pseudo, source: dict) -> list[tuple[dict[str, str], Qrels]]:
    from rerankforge.mining.pseudo_queries import sentence_queries, title_queries

    out = []
    empty = frozenset(collection.documents.empty_ids)
    if pseudo.titles:
        out.append(title_queries(collection.root, pseudo.titles, pseudo.seed, pseudo.title_min_words, exclude=empty))
        source["title_queries"] = len(out[-1][0])
    if pseudo.sentences:
        out.append(sentence_queries(collection.root, pseudo.sentences, pseudo.seed, pseudo.sentence_min_words,
                                    pseudo.sentence_max_words, exclude=empty))
        source["sentence_queries"] = len(out[-1][0])
    return out


def _collecting(runs: Iterable[Run], sink: Run) -> Iterator[Run]:
    for part in runs:
        sink.update(part)
        yield part


def cache_dir(kind: str, root: str | Path | None = None) -> Path:
    """``root`` or ``$RERANKFORGE_CACHE/<kind>`` (default ``~/.cache/rerankforge/<kind>``)."""
    if root:
        return Path(root)
    base = os.environ.get("RERANKFORGE_CACHE") or Path.home() / ".cache" / "rerankforge"
    return Path(base) / kind


def mine_cached(cfg: MineConfig, root: str | Path | None = None, collection: Collection | None = None) -> MineResult:
    """:func:`mine` into a cache keyed by a fingerprint of the mining options and of the input
    files' contents; a second run with the same inputs and options reuses the groups."""
    path = cache_dir("groups", root) / f"{Path(str(cfg.collection)).name}-{cfg.split}-{mine_fingerprint(cfg)}.jsonl"
    report = path.with_name(path.name[: -len(".jsonl")] + ".report.json")
    if path.exists() and report.exists():
        log.info("reusing mined groups %s", path)
        return MineResult(path, json.loads(report.read_text()), reused=True)
    return mine(replace(cfg, out=str(path), report=str(report), save_run=None), collection)


def mine_fingerprint(cfg: MineConfig) -> str:
    collection = Collection(cfg.collection)
    options = asdict(cfg)
    for key in ("out", "report", "save_run", "progress", "collection", "batch_size"):
        options.pop(key, None)
    files = [collection_file(collection.root, "corpus.jsonl"), collection_file(collection.root, "queries.jsonl"),
             collection.qrels_path(cfg.split)]
    if cfg.run:
        files.append(Path(cfg.run))
    key = {"schema": 1, "options": options, "files": [file_digest(p) for p in files if p is not None]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    p = Path(path).resolve()
    st = p.stat()
    memo = (str(p), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


# ------------------------------------------------------------------------------------ labels
def label_teacher(groups: str | Path, teacher, out: str | Path, *, collection: CollectionLike | None = None,
                  batch_size: int = 64, bf16: bool = True, batch_queries: int = 32, progress: bool = True):
    """Teacher scores on every candidate (the resumable ``teacher`` label job); returns its summary."""
    from rerankforge.labels import run_label_job
    from rerankforge.labels.teacher import TeacherLabeler

    text_of = Collection.of(collection).corpus.text if collection is not None else None
    return run_label_job(TeacherLabeler(teacher, batch_size, bf16), groups, out, text_of=text_of,
                         batch_queries=batch_queries, progress=progress)


# ------------------------------------------------------------------------------------ models
def ensure_model(path: str | Path | None, recipe: str | Path | None, what: str = "model") -> str | None:
    """``path`` if it exists; else, with a ``recipe`` (a training config whose export is that
    model), train the recipe first so a config that builds on another recipe runs by itself."""
    if path in (None, "", "default") or Path(str(path)).exists() or not recipe:
        return None if path is None else str(path)
    from rerankforge.config import load_config
    from rerankforge.train.config import TrainConfig

    sub = load_config(TrainConfig, recipe)
    expected = Path(sub.output_dir) / "model"
    if expected.resolve() != Path(path).resolve():
        raise ConfigError(f"{what} {path} does not exist, and recipe {recipe} would export "
                          f"{expected} instead")
    print(f"{what} {path} not found: training it with {recipe} first")
    train_recipe(sub)
    return str(path)


def train_recipe(cfg) -> dict[str, Any]:
    """A training config end to end: its model recipe and data pipeline if declared, training,
    then evaluation when ``eval.collection`` is set (``<output_dir>/eval.json``)."""
    from accelerate import PartialState

    from rerankforge.train.tracking import log_metrics, mixed_precision
    from rerankforge.train.trainer import Trainer
    from rerankforge.utils.io import write_json

    mixed_precision(cfg.bf16)  # a conflict with accelerate's setting fails before a recipe trains first
    ensure_model(cfg.model.name_or_path, cfg.model.recipe, "model.name_or_path")
    trainer = Trainer(args=cfg)
    model_dir = trainer.train(end_tracking=False)  # the trackers also get the evaluation below
    result: dict[str, Any] = {"model_dir": str(model_dir)}
    if cfg.eval.collection and PartialState().is_main_process:
        from rerankforge.models.base import load_reranker

        model = load_reranker(model_dir)
        report = evaluate_reranker(model, cfg.eval.collection, cfg.eval.split, cfg.eval.run, cfg.eval.depth,
                                   cfg.eval.measures, cfg.eval.batch_size, cfg.bf16, out_dir=Path(cfg.output_dir),
                                   max_queries=cfg.eval.max_queries)
        runs = report.pop("_runs")
        if cfg.eval.fusion:
            report.update(fused_on_dev(model, cfg, runs, Path(cfg.output_dir), dev=trainer.dev))
        write_json(Path(cfg.output_dir) / "eval.json", report)
        result["eval"] = report
        step = getattr(trainer, "global_step", None)
        log_metrics(trainer.accelerator, report["reranked"], f"eval/{cfg.eval.split}", step)
        log_metrics(trainer.accelerator, report["first_stage"], f"eval/{cfg.eval.split}/first_stage", step)
    if PartialState().is_main_process:
        from rerankforge.export.card import write_training_card
        from rerankforge.export.hub import maybe_push

        write_training_card(cfg, model_dir, evaluation=bool(cfg.eval.collection))
        result["hub_url"] = maybe_push(model_dir, cfg.card)
    trainer.accelerator.end_training()
    return result


def choose_fusion_alpha(model, collection: CollectionLike, split: str, run: Run, metric: str = "nDCG@10",
                        norm: str = "zscore", batch_size: int = 64, bf16: bool = True) -> tuple[float, dict[float, float]]:
    """The α of α·norm(first stage) + (1 − α)·norm(reranker) that maximises ``metric`` when ``model``
    reranks ``run`` (its queries judged in ``split``): the model-selection step of fusion, to be run
    on dev or held-out train queries, never on the queries reported."""
    from rerankforge.rerank.fusion import choose_alpha

    collection = Collection.of(collection)
    if split == "test":
        raise ConfigError("choose_fusion_alpha: split 'test' would choose the fusion weight on test judgments; "
                          "use a dev split or held-out train queries")
    qrels = collection.qrels(split)
    report = evaluate_reranker(model, collection, split, run, max(len(d) for d in run.values()), [metric], batch_size,
                               bf16, progress=False, max_queries=len(run))
    runs = report["_runs"]
    judged = {q: qrels[q] for q in run if q in qrels}
    return choose_alpha(runs["first_stage"], runs["reranked"], lambda r: evaluate(judged, r, [metric])[metric],
                        norm=norm)


def fused_on_dev(model, cfg, runs: Mapping[str, Run], out_dir: Path | None = None, dev=None) -> dict[str, Any]:
    """``eval.fusion``: the reranked evaluation run fused with its first stage at the α that
    :func:`choose_fusion_alpha` picks on the dev queries of ``cfg.dev`` (``dev``: the trainer's
    ``DevEvaluator``, whose first stage is already retrieved). The evaluated queries' judgments are
    read only to score the fused run, after α is fixed."""
    from rerankforge.rerank.fusion import fuse_with_first_stage
    from rerankforge.train.dev_eval import DevEvaluator

    dev = dev if dev is not None else DevEvaluator(cfg)
    if dev._run is None:
        dev.prepare()
    alpha, curve = choose_fusion_alpha(model, dev._collection, dev.split, dev._run, cfg.dev.metric,
                                       cfg.eval.fusion_norm, cfg.dev.batch_size, cfg.bf16)
    fused = fuse_with_first_stage(runs["first_stage"], runs["reranked"], alpha, cfg.eval.fusion_norm)
    qrels = Collection.of(cfg.eval.collection).qrels(cfg.eval.split)
    if out_dir is not None:
        write_run(Path(out_dir) / "fused.trec", fused, tag=f"rerankforge_fused_{alpha}")
    # judged queries as evaluate_reranker counts them, so "fused" and "reranked" compare
    judged = {q: qrels[q] for q in runs["first_stage"]} if cfg.eval.max_queries else qrels
    metric = cfg.dev.metric
    base = per_query(judged, runs["first_stage"], metric)
    return {
        "fused": evaluate(judged, fused, cfg.eval.measures),
        # paired randomisation on the evaluated queries (a report, not a choice: alpha is already fixed)
        "significance": {"metric": metric,
                         "fused_vs_first_stage": compare(base, per_query(judged, fused, metric)),
                         "reranked_vs_first_stage": compare(base, per_query(judged, runs["reranked"], metric))},
        "fusion": {"alpha": alpha, "norm": cfg.eval.fusion_norm, "metric": cfg.dev.metric,
                   "chosen_on": {"split": dev.split, "holdout": cfg.dev.holdout, "queries": len(dev._run),
                                 "depth": cfg.dev.depth},
                   "dev_pure": curve[0.0], "dev_fused": curve[alpha],
                   "curve": {str(a): v for a, v in curve.items()}},
    }


# ---------------------------------------------------------------------------- rerank + evaluate
def first_stage_run(collection: Collection, split: str, run_path: str | Path | None, depth: int,
                    max_queries: int | None = None) -> Run:
    """Read ``run_path`` or, without one, retrieve BM25 top-``depth`` for the split's judged queries."""
    qrels = collection.qrels(split)
    if run_path:
        first = read_run(run_path, collection.queries, collection.documents)
        first = {q: d for q, d in first.items() if q in qrels}
    else:
        queries = collection.split_queries(split)
        if max_queries:
            queries = dict(list(queries.items())[:max_queries])
        first = first_stage(collection, queries, "bm25", depth)
    if max_queries:
        first = dict(list(first.items())[:max_queries])
    return truncate(first, depth)


def evaluate_reranker(model, collection: CollectionLike, split: str, run: Run | str | Path | None = None,
                      depth: int = 100, measures: Sequence[str] = DEFAULT_MEASURES, batch_size: int = 64,
                      bf16: bool = True, out_dir: str | Path | None = None, progress: bool = True,
                      max_queries: int | None = None) -> dict[str, Any]:
    """Rerank the first stage of ``split`` and evaluate both; optionally write runs to ``out_dir``."""
    from rerankforge.models.base import Reranker, load_reranker
    from rerankforge.rerank import rerank
    from rerankforge.train.collapse import score_spread

    collection = Collection.of(collection)
    label = type(model).__name__ if isinstance(model, Reranker) else str(model)
    if not isinstance(model, Reranker):
        model = load_reranker(model)
    qrels = collection.qrels(split)
    if isinstance(run, dict):
        first = truncate({q: d for q, d in run.items() if q in qrels}, depth)
    else:
        first = first_stage_run(collection, split, run, depth, max_queries)
    reranked, stats = rerank(model, collection.queries, collection.corpus, first, depth, batch_size, bf16, progress)
    judged = {q: qrels[q] for q in first} if max_queries else qrels
    report = {
        "first_stage": evaluate(judged, first, measures),
        "reranked": evaluate(judged, reranked, measures),
        "rerank_speed": {"pairs": stats.pairs, "seconds": stats.seconds, "pairs_per_s": stats.pairs_per_s,
                         "ms_per_query": stats.ms_per_query},
        "split": split,
        "depth": depth,
        "queries": len(first),
        # Nearly constant scores (a collapsed model) are flagged and warned about: its metrics then
        # only reflect how ties fall.
        "score_spread": score_spread(reranked, what=f"reranker {label}"),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_run(out_dir / "first_stage.trec", first, tag="first_stage")
        write_run(out_dir / "reranked.trec", reranked, tag="rerankforge")
    report["_runs"] = {"first_stage": first, "reranked": reranked}
    return report
