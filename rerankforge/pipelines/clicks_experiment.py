"""The click experiment: simulate clicks on real rankings, estimate position bias, train a
reranker on naive and on IPW click labels, evaluate both on real judgments.

    rerankforge clicks experiment --config configs/clicks_nfcorpus.yaml [key=value ...]

Steps (all outputs under ``output_dir``):

1. BM25 top-k for the train queries -> ``train_first_stage.trec``; simulate impressions with
   PBM clicks -> ``clicks.jsonl.gz`` (+ ``simulation.json``: config and true propensities).
2. Read the log back through the click-log reader, fit PBM by EM with a bootstrap interval and
   the cascade model -> ``propensities.json`` / ``propensities.png``.
3. For each arm (``naive``, ``ipw``): click-derived training groups -> ``groups_<arm>.jsonl``;
   train with the same :class:`~rerankforge.train.config.TrainConfig` (same seed, same groups
   order) -> ``<arm>/model``.
4. Rerank BM25 top-``depth`` of the test queries with each model (and, with
   ``eval.include_init``, with the model both arms start from); evaluate against the graded
   test qrels -> ``clicks_report.json``: ``{"bm25": {...}, "naive": {...}, "ipw": {...},
   "propensity": {"true": [...], "estimated": [...]}, "details": {...}}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from rerankforge.clicks.labels import LabelConfig
from rerankforge.clicks.simulate import SimulationConfig
from rerankforge.errors import ConfigError


@dataclass
class EstimationConfig:
    relevance: str = "mixture"
    bootstrap: int = 30
    bootstrap_unit: str = "query"
    confidence: float = 0.95
    seed: int = 0


@dataclass
class ExperimentEvalConfig:
    split: str = "test"
    depth: int = 100
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "RR@10", "AP@100", "R@10"])
    batch_size: int = 64
    #: evaluate on the first N test queries only (quick runs)
    max_queries: Optional[int] = None
    #: also rerank with the model both arms start from (report key "init"): did clicks help at all?
    include_init: bool = False


@dataclass
class ClicksExperimentConfig:
    output_dir: str = "runs/clicks_nfcorpus"
    collection: str = MISSING
    train_split: str = "train"
    #: simulate on the first N train queries only (quick runs)
    max_train_queries: Optional[int] = None
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    estimation: EstimationConfig = field(default_factory=EstimationConfig)
    labels: LabelConfig = field(default_factory=lambda: LabelConfig(with_text=False))
    #: which label methods to train on (each a LabelConfig.method)
    arms: list[str] = field(default_factory=lambda: ["naive", "ipw"])
    #: a TrainConfig without output_dir / data.train_groups (filled in per arm)
    train: dict[str, Any] = field(default_factory=dict)
    eval: ExperimentEvalConfig = field(default_factory=ExperimentEvalConfig)

    def validate(self) -> None:
        for arm in self.arms:
            if arm not in ("naive", "ipw"):
                raise ConfigError(f"arms: unknown label method {arm!r} (naive, ipw)")
        _train_config(self, "arm", "groups.jsonl")  # fail on a bad train section before hours of work


def load_experiment_config(path: str | Path | None, overrides: list[str] | None = None,
                           values: dict | None = None) -> ClicksExperimentConfig:
    from rerankforge.config import load_config

    return load_config(ClicksExperimentConfig, path, overrides or (), values)


def _train_config(cfg: ClicksExperimentConfig, arm: str, groups: str):
    from rerankforge.train.config import TrainConfig

    from rerankforge.config import config_from_dict

    section = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(cfg.train), {
        "output_dir": str(Path(cfg.output_dir) / arm), "data": {"train_groups": groups, "collection": cfg.collection}}))
    return config_from_dict(TrainConfig, section, "train section")


def label_quality(groups, qrels, measures=("nDCG@10",), by: str = "target") -> dict[str, float]:
    """How well the click-derived training targets order each group's candidates, judged by the
    real qrels: candidates scored by what a listwise loss sees (gain(label) * weight), or
    (``by="rank"``) in the order the logging ranker usually showed them."""
    from rerankforge.eval import evaluate

    run = {}
    for g in groups:
        if by == "rank":
            scores = [(c.doc_id, -float(c.rank or 0)) for c in g.candidates]
        else:
            scores = [(c.doc_id, (2.0 ** (c.label or 0.0) - 1.0) * (1.0 if c.weight is None else c.weight))
                      for c in g.candidates]
        run[g.query_id] = sorted(scores, key=lambda e: -e[1])
    judged = {q: qrels[q] for q in run if q in qrels}
    return evaluate(judged, run, list(measures))


def run_experiment(cfg: ClicksExperimentConfig, progress: bool = True) -> dict[str, Any]:
    from rerankforge.clicks.cascade import fit_cascade
    from rerankforge.clicks.labels import click_groups
    from rerankforge.clicks.observations import build_observations
    from rerankforge.clicks.pbm import bootstrap_pbm, fit_pbm, identifiable_share
    from rerankforge.clicks.plot import plot_propensities
    from rerankforge.clicks.propensity import Propensities
    from rerankforge.clicks.simulate import examination_curve, retrieval_depth, simulate_clicks
    from rerankforge.data.beir import Collection
    from rerankforge.data.clicks import read_click_log, write_click_log
    from rerankforge.data.groups import write_groups
    from rerankforge.data.trec import write_run
    from rerankforge.eval import evaluate, per_query
    from rerankforge.rerank.run import rerank
    from rerankforge.eval.significance import compare
    from rerankforge.pipelines import steps
    from rerankforge.models import load_reranker
    from rerankforge.train import train
    from rerankforge.utils.io import write_json

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    collection = Collection(cfg.collection)
    sim = cfg.simulation

    # 1. first stage and simulated clicks
    retriever = steps.index(collection, "bm25")
    train_queries = collection.split_queries(cfg.train_split)
    if cfg.max_train_queries:
        train_queries = dict(list(train_queries.items())[: cfg.max_train_queries])
    train_run = retriever.search(train_queries, retrieval_depth(sim))
    write_run(out / "train_first_stage.trec", train_run, tag="bm25")
    impressions = simulate_clicks(train_run, collection.qrels(cfg.train_split), sim)
    log_path = out / "clicks.jsonl.gz"
    write_click_log(log_path, impressions)
    true = examination_curve(sim)
    write_json(out / "simulation.json", {"config": asdict(sim), "true_propensity": true,
                                         "queries": len(train_run), "impressions": len(impressions)})
    timings["simulate_s"] = time.perf_counter() - t0

    # 2. propensities from the log, as a user would get them
    t = time.perf_counter()
    click_log = read_click_log(log_path, queries=collection.queries, corpus=collection.corpus, strict=True)
    obs = build_observations(click_log.impressions)
    est = cfg.estimation
    pbm = fit_pbm(obs, est.relevance)
    boot = bootstrap_pbm(obs, pbm, est.bootstrap, est.bootstrap_unit, est.confidence, est.seed) \
        if est.bootstrap >= 2 else None
    cascade = fit_cascade(click_log.impressions)
    estimated = pbm.propensity.tolist()
    props = Propensities(estimated, boot.low.tolist() if boot else None, boot.high.tolist() if boot else None,
                         est.confidence if boot else None,
                         {"model": "pbm", "relevance": est.relevance, "source": str(log_path),
                          "em": {"steps": pbm.iterations, "converged": pbm.converged},
                          "bootstrap": {"samples": est.bootstrap, "unit": est.bootstrap_unit} if boot else None,
                          "identifiable_share": identifiable_share(obs.aggregate()[0]),
                          "cascade_examination": cascade.examination.tolist()})
    props.save(out / "propensities.json")
    plot_propensities(out / "propensities.png", estimated, (props.ci_low, props.ci_high) if boot else None,
                      true=true, extra={"cascade (mean P(examined))": cascade.examination.tolist()},
                      title=f"NFCorpus simulation: PBM eta={sim.eta}, {len(impressions)} impressions",
                      confidence=est.confidence)
    rel_err = [abs(e / tr - 1.0) for e, tr in zip(estimated, true)]
    timings["estimate_s"] = time.perf_counter() - t

    # 3 + 4. train one model per arm, evaluate all on the same BM25 test run
    test_qrels = collection.qrels(cfg.eval.split)
    test_queries = collection.split_queries(cfg.eval.split)
    if cfg.eval.max_queries:
        test_queries = dict(list(test_queries.items())[: cfg.eval.max_queries])
    test_qrels = {q: test_qrels[q] for q in test_queries}
    test_run = retriever.search(test_queries, cfg.eval.depth)
    write_run(out / "test_first_stage.trec", test_run, tag="bm25")
    measures = list(cfg.eval.measures)
    report: dict[str, Any] = {"bm25": evaluate(test_qrels, test_run, measures)}
    per_q = {"bm25": per_query(test_qrels, test_run, "nDCG@10")}
    if cfg.eval.include_init:
        t = time.perf_counter()
        from rerankforge.train.build import build_model

        tc = _train_config(cfg, "init", "unused.jsonl")
        reranked, _ = rerank(build_model(tc.model), collection.queries, collection.corpus, test_run, cfg.eval.depth,
                             cfg.eval.batch_size, tc.bf16, progress)
        report["init"] = evaluate(test_qrels, reranked, measures)
        per_q["init"] = per_query(test_qrels, reranked, "nDCG@10")
        timings["eval_init_s"] = time.perf_counter() - t
    arm_details: dict[str, Any] = {}
    shown_order = None
    for arm in cfg.arms:
        t = time.perf_counter()
        label_cfg = LabelConfig(**{**asdict(cfg.labels), "method": arm})
        groups, stats = click_groups(click_log.impressions, label_cfg, props, collection.queries, collection.corpus)
        groups_path = out / f"groups_{arm}.jsonl"
        write_groups(groups_path, groups)
        quality = label_quality(groups, collection.qrels(cfg.train_split))
        if shown_order is None:  # same candidates in every arm: the logging ranker's order, for reference
            shown_order = label_quality(groups, collection.qrels(cfg.train_split), by="rank")["nDCG@10"]
        tc = _train_config(cfg, arm, str(groups_path))
        tc.progress = progress
        model_dir = train(tc)
        timings[f"train_{arm}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        model = load_reranker(model_dir)
        reranked, rstats = rerank(model, collection.queries, collection.corpus, test_run, cfg.eval.depth,
                                  cfg.eval.batch_size, tc.bf16, progress)
        write_run(out / arm / "test_reranked.trec", reranked, tag=f"clicks-{arm}")
        report[arm] = evaluate(test_qrels, reranked, measures)
        per_q[arm] = per_query(test_qrels, reranked, "nDCG@10")
        timings[f"eval_{arm}_s"] = time.perf_counter() - t
        summary = json.loads((Path(tc.output_dir) / "train_summary.json").read_text())
        arm_details[arm] = {"labels": stats.to_json(), "label_ndcg@10": quality["nDCG@10"], "model": str(model_dir),
                            "train_steps": summary["global_step"], "train_pairs": summary["pairs"],
                            "train_pairs_per_s": summary["pairs_per_s"],
                            "rerank_pairs_per_s": rstats.pairs_per_s}
    report["propensity"] = {"true": true, "estimated": estimated}
    details: dict[str, Any] = {
        "propensity_ci": {"low": props.ci_low, "high": props.ci_high, "confidence": props.confidence,
                          "unit": est.bootstrap_unit if boot else None},
        "propensity_relative_error": rel_err,
        "propensity_max_relative_error": max(rel_err),
        "cascade_examination": cascade.examination.tolist(),
        "impressions": len(impressions), "clicks": int(sum(len(i.clicks) for i in impressions)),
        "label_ndcg@10_shown_order": shown_order,
        "train_queries": len(train_run), "test_queries": len(test_queries), "depth": cfg.eval.depth,
        "arms": arm_details, "timings_s": timings,
    }
    if "naive" in per_q and "ipw" in per_q:
        details["ipw_vs_naive_ndcg@10"] = compare(per_q["naive"], per_q["ipw"])
    for arm in ("naive", "ipw"):
        if "init" in per_q and arm in per_q:
            details[f"{arm}_vs_init_ndcg@10"] = compare(per_q["init"], per_q[arm])
    report["details"] = details
    timings["total_s"] = time.perf_counter() - t0
    write_json(out / "clicks_report.json", report)
    return report
