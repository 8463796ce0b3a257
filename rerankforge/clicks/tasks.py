"""What the ``rerankforge clicks`` verbs compute, as functions over typed settings:
``estimate`` (position bias of a log), ``groups`` (click-derived training groups) and
``simulate`` (a PBM click log on real judgments and a real ranking)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from rerankforge.clicks.simulate import SimulationConfig
from rerankforge.config import option, require
from rerankforge.errors import ConfigError


@dataclass
class ClickLogOptions:
    log: list[str] = option(factory=list, flag="--log", repeat=True, help="JSONL click log (.gz ok; repeatable)")
    collection: Optional[str] = option(None, flag="--collection",
                                       help="BEIR collection: query/document texts; unknown ids become malformed "
                                            "impressions")
    strict: bool = option(False, flag="--strict", help="stop at the first malformed impression")
    unshown_clicks: str = option("skip", flag="--unshown-clicks", choices=("skip", "drop"),
                                 help="an impression with a click on a document it did not show is skipped, or "
                                      "keeps its other clicks (drop)")
    min_dwell: Optional[float] = option(None, flag="--min-dwell",
                                        help="clicks with a dwell time below this many seconds count as no click")
    max_rank: Optional[int] = option(None, flag="--max-rank", help="ignore ranks deeper than this")

    def validate(self) -> None:
        require(self, "log")


@dataclass
class EstimateConfig(ClickLogOptions):
    out: Optional[str] = option(None, flag="--out", help="propensities JSON (a PNG plot is written beside it)")
    plot: Optional[str] = option(None, flag="--plot", help="PNG path (default: OUT with .png)")
    relevance: str = option("mixture", flag="--relevance", choices=("mixture", "pair"),
                            help="PBM relevance model: shared prior over pairs or one free parameter per pair")
    grid_size: int = option(50, flag="--grid-size", help="relevance grid points of the mixture model")
    bootstrap: int = option(50, flag="--bootstrap", help="bootstrap resamples for the interval (0: none)")
    bootstrap_unit: str = option("query", flag="--bootstrap-unit", choices=("query", "impression"))
    confidence: float = option(0.95, flag="--confidence", help="interval coverage")
    seed: int = option(0, flag="--seed", help="bootstrap seed")
    test_log: list[str] = option(factory=list, flag="--test-log", repeat=True,
                                 help="held-out log: report click perplexity of PBM and cascade")
    verdict_simulations: int = option(5, flag="--verdict-simulations",
                                      help="re-simulated logs for the is-correction-worth-it verdict (0: none)")
    min_gain: float = option(0.01, flag="--min-gain", help="nDCG@10 gain below which correction is not worth it")

    def validate(self) -> None:
        super().validate()
        require(self, "out")
        if self.verdict_simulations < 0:
            raise ConfigError(f"--verdict-simulations must be >= 0, got {self.verdict_simulations}")


@dataclass
class ClickGroupsConfig(ClickLogOptions):
    propensities: Optional[str] = option(None, flag="--propensities",
                                         help="propensities JSON from `clicks estimate` (required for ipw)")
    method: str = option("ipw", flag="--method", choices=("naive", "ipw"), help="click labels")
    structure: str = option("aggregate", flag="--structure", choices=("aggregate", "skip-above"),
                            help="one group per query, or skip-above preference groups (Joachims 2002)")
    label_mode: str = option("indicator", flag="--label-mode", choices=("indicator", "rate"),
                             help="indicator: label 1/0 with the click rate as weight (listwise losses); rate: the "
                                  "click rate as a soft label (pointwise losses)")
    max_weight: float = option(20.0, flag="--max-weight", help="clip 1/propensity at this value")
    keep_unclicked: bool = option(False, flag="--keep-unclicked", help="keep queries without any click")
    text: bool = option(True, flag="--no-text", help="store doc ids only (train with data.collection)")
    out: Optional[str] = option(None, flag="--out", help="groups JSONL")

    def validate(self) -> None:
        super().validate()
        require(self, "collection", "out")


@dataclass
class SimulateConfig:
    collection: Optional[str] = option(None, flag="--collection", help="BEIR collection directory")
    split: str = option("train", flag="--split", help="qrels split whose queries are shown")
    run: Optional[str] = option(None, flag="--run", help="first-stage TREC run to show (default: BM25 top-k)")
    out: Optional[str] = option(None, flag="--out", help="click log JSONL (.gz ok); the truth goes to OUT's .sim.json")
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def validate(self) -> None:
        require(self, "collection", "out")


def read_log(cfg: ClickLogOptions, paths=None):
    """The click log (with the collection's texts and ids when ``cfg.collection`` is set)."""
    from rerankforge.data.clicks import read_click_log

    collection = queries = corpus = None
    if cfg.collection:
        from rerankforge.data.beir import Collection

        collection = Collection(cfg.collection)
        queries, corpus = collection.queries, collection.corpus
    click_log = read_click_log(paths or cfg.log, queries=queries, corpus=corpus, strict=cfg.strict,
                               unshown_clicks=cfg.unshown_clicks)
    return click_log, collection


def sidecar(path: str | Path, suffix: str) -> Path:
    path = Path(path)
    name = path.name
    for ext in (".gz", ".jsonl", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return path.with_name(name + suffix)


@dataclass
class Estimate:
    propensities: Any
    meta: dict[str, Any]
    rank_views: Any
    rank_clicks: Any
    ctr: Any
    cascade: Any
    bootstrap: Any
    num_ranks: int
    converged: bool
    plot: str
    log_summary: str


def estimate(cfg: EstimateConfig) -> Estimate:
    """PBM propensities by EM (with a bootstrap interval), the cascade model, CTR per rank and,
    with a held-out log, click perplexities; writes ``cfg.out`` and its plot."""
    from rerankforge.clicks.cascade import fit_cascade
    from rerankforge.clicks.observations import build_observations
    from rerankforge.clicks.pbm import bootstrap_pbm, fit_pbm, identifiable_share, predict_clicks
    from rerankforge.clicks.plot import plot_propensities
    from rerankforge.clicks.propensity import Propensities

    click_log, _ = read_log(cfg)
    obs = build_observations(click_log.impressions, cfg.max_rank, cfg.min_dwell)
    views, clicks = obs.aggregate()
    pbm = fit_pbm(obs, cfg.relevance, views=views, clicks=clicks, grid_size=cfg.grid_size)
    boot = bootstrap_pbm(obs, pbm, cfg.bootstrap, cfg.bootstrap_unit, cfg.confidence, cfg.seed) \
        if cfg.bootstrap >= 2 else None
    cascade = fit_cascade(click_log.impressions, max_rank=cfg.max_rank, min_dwell=cfg.min_dwell)
    rank_views, rank_clicks = views.sum(0), clicks.sum(0)
    ctr = rank_clicks / rank_views.clip(min=1)
    meta = {
        "model": "pbm", "relevance": cfg.relevance,
        "grid_size": cfg.grid_size if cfg.relevance == "mixture" else None, "log": [str(p) for p in cfg.log],
        "impressions": obs.num_impressions, "queries": len(obs.queries), "pairs": obs.num_pairs,
        "identifiable_share": identifiable_share(views),
        "em": {"steps": pbm.iterations, "converged": pbm.converged, "log_likelihood": pbm.log_likelihood},
        "bootstrap": {"samples": cfg.bootstrap, "unit": cfg.bootstrap_unit, "seed": cfg.seed} if boot else None,
        "views_per_rank": rank_views.tolist(), "clicks_per_rank": rank_clicks.tolist(),
        "ctr_per_rank": ctr.tolist(), "cascade_examination": cascade.examination.tolist(),
        "min_dwell": cfg.min_dwell, "skipped": dict(click_log.stats.skipped),
    }
    if cfg.test_log:
        from rerankforge.clicks.metrics import click_perplexity
        from rerankforge.data.clicks import read_click_log

        test = read_click_log(cfg.test_log, strict=cfg.strict, unshown_clicks=cfg.unshown_clicks)
        meta["test"] = {
            "log": list(cfg.test_log), "impressions": len(test),
            "pbm": click_perplexity(test.impressions, lambda q, s: predict_clicks(pbm, obs, q, s),
                                    cfg.max_rank, cfg.min_dwell),
            "cascade": click_perplexity(test.impressions,
                                        lambda q, s: [cascade.click_probs(a, b) for a, b in zip(q, s)],
                                        cfg.max_rank, cfg.min_dwell),
        }
    if cfg.verdict_simulations:
        from rerankforge.clicks.verdict import VerdictConfig, correction_verdict

        meta["correction"] = correction_verdict(obs, pbm.theta, pbm.gamma, VerdictConfig(
            simulations=cfg.verdict_simulations, min_gain=cfg.min_gain, seed=cfg.seed))
    props = Propensities(pbm.propensity.tolist(), boot.low.tolist() if boot else None,
                         boot.high.tolist() if boot else None, cfg.confidence if boot else None, meta)
    props.save(cfg.out)
    plot = cfg.plot or str(Path(cfg.out).with_suffix(".png"))
    ctr_norm = (ctr / ctr[0]).tolist() if ctr[0] > 0 else None
    extra = {"cascade (mean P(examined))": cascade.examination.tolist()}
    if ctr_norm:
        extra["CTR / CTR@1 (biased by relevance)"] = ctr_norm
    plot_propensities(plot, props.values, (props.ci_low, props.ci_high) if boot else None, extra=extra,
                      title=f"Position bias: {Path(cfg.log[0]).name}", confidence=cfg.confidence)
    return Estimate(props, meta, rank_views, rank_clicks, ctr, cascade, boot, obs.num_ranks, pbm.converged, plot,
                    click_log.stats.summary())


def click_groups_from_log(cfg: ClickGroupsConfig):
    """Click-derived training groups written to ``cfg.out``; returns (groups, stats, log summary)."""
    from rerankforge.clicks.labels import LabelConfig, click_groups
    from rerankforge.clicks.propensity import load_propensities
    from rerankforge.data.groups import write_groups

    click_log, collection = read_log(cfg)
    props = load_propensities(cfg.propensities) if cfg.propensities else None
    labels = LabelConfig(method=cfg.method, structure=cfg.structure.replace("-", "_"), label_mode=cfg.label_mode,
                         max_weight=cfg.max_weight, min_dwell=cfg.min_dwell, keep_unclicked=cfg.keep_unclicked,
                         with_text=cfg.text, max_rank=cfg.max_rank)
    labels.validate()
    groups, stats = click_groups(click_log.impressions, labels, props, collection.queries, collection.corpus)
    write_groups(cfg.out, groups)
    return groups, stats, click_log.stats.summary()


def simulate_log(cfg: SimulateConfig) -> dict[str, Any]:
    """A simulated click log at ``cfg.out`` and its truth (config, true propensities) beside it."""
    from rerankforge.clicks.simulate import examination_curve, retrieval_depth, simulate_clicks
    from rerankforge.data.beir import Collection
    from rerankforge.data.clicks import write_click_log
    from rerankforge.utils.io import write_json

    collection = Collection(cfg.collection)
    qrels = collection.qrels(cfg.split)
    sim = cfg.simulation
    if cfg.run:
        from rerankforge.data.trec import read_run

        run = read_run(cfg.run, collection.queries, collection.corpus)
    else:
        from rerankforge.pipelines.steps import first_stage

        run = first_stage(collection, cfg.split, "bm25", retrieval_depth(sim))
    impressions = simulate_clicks(run, qrels, sim)
    write_click_log(cfg.out, impressions)
    truth = sidecar(cfg.out, ".sim.json")
    true = examination_curve(sim)
    write_json(truth, {"config": asdict(sim), "true_propensity": true, "collection": str(collection.root),
                       "split": cfg.split, "run": cfg.run or "bm25"})
    return {"impressions": len(impressions), "queries": len({i.query_id for i in impressions}),
            "clicks": sum(len(i.clicks) for i in impressions), "truth": str(truth), "true_propensity": true}
