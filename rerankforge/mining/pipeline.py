"""End-to-end retrieval and mining over a BEIR collection directory (what the CLI verbs run).

The corpus is always read as a :class:`~rerankforge.mining.corpus.CorpusStream`: the retriever
indexes it batch by batch, and mining reads back only the texts it writes, so memory is the index
plus the document ids, not the corpus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rerankforge.data.beir import Qrels, collection_file, load_qrels, load_queries
from rerankforge.data.trec import Run, read_run, write_run
from rerankforge.errors import ConfigError
from rerankforge.mining.corpus import CorpusStream
from rerankforge.mining.options import MineConfig, RetrieveConfig, build_retriever_from_config

log = logging.getLogger(__name__)

SUMMARY_MEASURES = ("nDCG@10", "R@100")


@dataclass
class CollectionFiles:
    root: Path
    queries: dict[str, str]
    corpus: CorpusStream

    @classmethod
    def open(cls, root: str | Path | None) -> CollectionFiles:
        if not root:
            raise ConfigError("no collection given (--collection DIR or 'collection:' in the config)")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"collection directory {root} does not exist")
        return cls(root, load_queries(collection_file(root, "queries.jsonl")),
                   CorpusStream(collection_file(root, "corpus.jsonl")))

    def splits(self) -> list[str]:
        return sorted(p.name.split(".")[0] for p in (self.root / "qrels").glob("*.tsv*"))

    def qrels_path(self, split: str) -> Path | None:
        for name in (f"{split}.tsv", f"{split}.tsv.gz"):
            if (self.root / "qrels" / name).exists():
                return self.root / "qrels" / name
        return None

    def qrels(self, split: str, required: bool = True) -> Qrels | None:
        path = self.qrels_path(split)
        if path is None:
            if required:
                raise FileNotFoundError(f"{self.root / 'qrels' / (split + '.tsv')} not found; splits here: "
                                        f"{', '.join(self.splits()) or 'none'}")
            return None
        return load_qrels(path, self.queries, _KnownOrEmpty(self.corpus))


class _KnownOrEmpty:
    """Qrels may judge documents the corpus has but skipped for being empty; those are not errors
    (mining leaves such positives out; evaluation counts them as never retrieved)."""

    def __init__(self, corpus: CorpusStream):
        self.corpus = corpus
        corpus.require_ids()

    def __contains__(self, doc_id) -> bool:
        return doc_id in self.corpus.empty_ids or doc_id in self.corpus.ids


def evaluate_run(qrels: Mapping[str, Mapping[str, int]], run: Run, measures=SUMMARY_MEASURES) -> dict[str, float]:
    """Mean of each ir-measures measure over judged queries with a positive; missing queries count 0."""
    import ir_measures

    parsed = {m: ir_measures.parse_measure(m) for m in measures}
    judged = {q: dict(d) for q, d in qrels.items() if any(g > 0 for g in d.values())}
    run_d = {q: {d: float(s) for d, s in docs} for q, docs in run.items() if q in judged and docs}
    sums = dict.fromkeys(parsed, 0.0)
    names = {m: name for name, m in parsed.items()}
    for metric in ir_measures.iter_calc(list(parsed.values()), judged, run_d):
        sums[names[metric.measure]] += metric.value
    return {name: (v / len(judged) if judged else 0.0) for name, v in sums.items()}


@dataclass
class RetrievalResult:
    run: Run
    retriever: Any
    queries: int
    depth: int
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] | None = None


def retrieve_collection(cfg: RetrieveConfig, progress: bool = True) -> RetrievalResult:
    """Index the collection, search the split's judged queries (all queries when the split has no
    qrels) and, when qrels exist, evaluate nDCG@10 and R@100."""
    files = CollectionFiles.open(cfg.collection)
    depth = cfg.depth or 100
    retriever = build_retriever_from_config(cfg, show_progress=progress)
    t0 = time.perf_counter()
    retriever.index(files.corpus)
    t_index = time.perf_counter() - t0
    qrels = files.qrels(cfg.split, required=False) if cfg.split else None
    queries = {q: files.queries[q] for q in qrels} if qrels is not None else files.queries
    t1 = time.perf_counter()
    run = retriever.search(queries, depth)
    t_search = time.perf_counter() - t1
    metrics = evaluate_run(qrels, run) if qrels is not None else None
    return RetrievalResult(run, retriever, len(queries), depth,
                           {"index_s": t_index, "search_s": t_search, "queries_per_s": len(queries) / max(t_search, 1e-9)},
                           metrics)


def _collecting(runs: Iterator[Run], sink: Run) -> Iterator[Run]:
    for part in runs:
        sink.update(part)
        yield part


def mine_collection(cfg: MineConfig, progress: bool = True) -> dict[str, Any]:
    """Mine ``cfg.out`` (groups JSONL) and write ``<out>.report.json``; returns the report."""
    from rerankforge.data.groups import write_groups
    from rerankforge.mining.negatives import NegativeMiner
    from rerankforge.mining.report import build_report, report_path
    from rerankforge.utils.io import write_json

    if not cfg.out:
        raise ConfigError("no output given (--out GROUPS.jsonl)")
    if not cfg.split:
        raise ConfigError("no split given (--split SPLIT)")
    policy = cfg.policy.validate()
    files = CollectionFiles.open(cfg.collection)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    retriever = None
    source: dict[str, Any] = {"collection": str(files.root), "split": cfg.split}
    if cfg.run:
        files.corpus.require_ids()
        timings["read_corpus_ids_s"] = time.perf_counter() - t0
        qrels = files.qrels(cfg.split)
        t1 = time.perf_counter()
        run = read_run(cfg.run, None, None)
        known = [q for q in run if q in qrels]
        if not known:
            raise ConfigError(f"{cfg.run}: none of its {len(run)} queries is judged in split {cfg.split!r} "
                              f"of {files.root}")
        runs: Run | Iterator[Run] = run
        timings["read_run_s"] = time.perf_counter() - t1
        source["run"] = str(cfg.run)
    else:
        depth = cfg.depth or max(100, policy.rank_max)
        if depth < policy.rank_max:
            log.warning("depth %d < rank_max %d: negatives come from the top %d only", depth, policy.rank_max, depth)
        retriever = build_retriever_from_config(cfg, show_progress=progress)
        retriever.index(files.corpus)
        timings["index_s"] = time.perf_counter() - t0
        qrels = files.qrels(cfg.split)
        queries = {q: files.queries[q] for q in qrels if q in files.queries}
        runs = retriever.iter_search(queries, depth, progress=progress)
        source["retriever"] = retriever.config()
        source["depth"] = depth
        if cfg.save_run:
            collected: Run = {}
            runs = _collecting(runs, collected)
    miner = NegativeMiner(policy, files.corpus, retriever=retriever, with_text=cfg.text)
    t2 = time.perf_counter()
    n = write_groups(cfg.out, miner.mine(files.queries, qrels, runs))
    timings["retrieve_and_mine_s"] = time.perf_counter() - t2
    if not cfg.run and cfg.save_run:
        write_run(cfg.save_run, collected, tag=f"rerankforge-{retriever.name}")
        source["saved_run"] = str(cfg.save_run)
    timings["total_s"] = time.perf_counter() - t0
    report = build_report(miner.stats, policy, source=source, out=cfg.out, timings=timings)
    report["groups_written"] = n
    path = Path(cfg.report) if cfg.report else report_path(cfg.out)
    write_json(path, report)
    report["report_path"] = str(path)
    return report


def policy_dict(cfg: MineConfig) -> dict[str, Any]:
    return asdict(cfg.policy)
