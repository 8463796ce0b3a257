"""``rerankforge clicks {estimate,groups,simulate,experiment}``: learning to rank from click logs.

    rerankforge clicks estimate --log LOG.jsonl --out propensities.json
    rerankforge clicks groups --log LOG --collection DIR --propensities P.json --method ipw --out GROUPS.jsonl
    rerankforge clicks simulate --collection DIR --split train --out LOG.jsonl.gz
    rerankforge clicks experiment --config configs/clicks_nfcorpus.yaml [key=value ...]
"""

from __future__ import annotations

from pathlib import Path


def _log_args(p, collection_required: bool = False) -> None:
    p.add_argument("--log", action="append", required=True, help="JSONL click log (.gz ok; repeatable)")
    p.add_argument("--collection", required=collection_required,
                   help="BEIR collection: query/document texts, and unknown ids become malformed impressions")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed impression")
    p.add_argument("--unshown-clicks", choices=("skip", "drop"), default="skip",
                   help="an impression with a click on a document it did not show is skipped (default) or "
                        "keeps its other clicks (drop)")
    p.add_argument("--min-dwell", type=float, default=None,
                   help="clicks with a dwell time below this many seconds count as no click")
    p.add_argument("--max-rank", type=int, default=None, help="ignore ranks deeper than this")


def add_parser(sub):
    p = sub.add_parser("clicks", help="click logs: position bias, click labels, simulation, experiment",
                       description="Unbiased learning to rank from click logs.")
    verbs = p.add_subparsers(dest="clicks_command", metavar="ACTION", required=True)

    e = verbs.add_parser("estimate", help="estimate the position-bias (propensity) curve of a click log")
    _log_args(e)
    e.add_argument("--out", required=True, help="propensities JSON (a PNG plot is written beside it)")
    e.add_argument("--plot", help="PNG path (default: OUT with .png)")
    e.add_argument("--relevance", choices=("mixture", "pair"), default="mixture",
                   help="PBM relevance model: shared prior over pairs (default) or one free parameter per pair")
    e.add_argument("--grid-size", type=int, default=50, help="relevance grid points of the mixture model")
    e.add_argument("--bootstrap", type=int, default=50, help="bootstrap resamples for the interval (0: none)")
    e.add_argument("--bootstrap-unit", choices=("query", "impression"), default="query")
    e.add_argument("--confidence", type=float, default=0.95)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--test-log", action="append", help="held-out log: report click perplexity of PBM and cascade")

    g = verbs.add_parser("groups", help="training groups (rerankforge.group/1) from a click log")
    _log_args(g, collection_required=True)
    g.add_argument("--propensities", help="propensities JSON from `clicks estimate` (required for ipw)")
    g.add_argument("--method", choices=("naive", "ipw"), default="ipw")
    g.add_argument("--structure", choices=("aggregate", "skip-above"), default="aggregate",
                   help="one group per query (default) or skip-above preference groups (Joachims 2002)")
    g.add_argument("--label-mode", choices=("indicator", "rate"), default="indicator",
                   help="indicator: label 1/0 with the click rate as weight (listwise losses); "
                        "rate: the click rate as a soft label (pointwise losses)")
    g.add_argument("--max-weight", type=float, default=20.0, help="clip 1/propensity at this value")
    g.add_argument("--keep-unclicked", action="store_true", help="keep queries without any click")
    g.add_argument("--no-text", action="store_true", help="store doc ids only (train with data.collection)")
    g.add_argument("--out", required=True, help="groups JSONL")

    s = verbs.add_parser("simulate", help="simulate a PBM click log on real judgments and a real ranking")
    s.add_argument("--collection", required=True)
    s.add_argument("--split", default="train", help="qrels split whose queries are shown")
    s.add_argument("--run", help="first-stage TREC run to show (default: BM25 top-k)")
    s.add_argument("--out", required=True, help="click log JSONL (.gz ok); the truth goes to OUT's .sim.json")
    s.add_argument("--impressions", type=int, default=50_000)
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--eta", type=float, default=1.0, help="position-bias severity: P(examine r) = (1/r)^eta")
    s.add_argument("--eps-pos", type=float, default=1.0, help="click probability of an examined top-grade document")
    s.add_argument("--eps-neg", type=float, default=0.1, help="click probability of an examined non-relevant document")
    s.add_argument("--relevance", choices=("graded", "binary"), default="graded")
    s.add_argument("--perturb", choices=("none", "shuffle", "swap"), default="shuffle",
                   help="interventions that make position bias identifiable (see rerankforge.clicks.simulate)")
    s.add_argument("--perturb-prob", type=float, default=0.2)
    s.add_argument("--seed", type=int, default=0)

    x = verbs.add_parser("experiment", help="simulate, estimate, train naive vs IPW, evaluate (one config)")
    x.add_argument("--config", required=True, help="experiment YAML (see configs/clicks_nfcorpus.yaml)")
    x.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. simulation.impressions=5000")
    return p


def run(args) -> int:
    return {"estimate": _estimate, "groups": _groups, "simulate": _simulate,
            "experiment": _experiment}[args.clicks_command](args)


def _read_log(args, paths=None):
    from rerankforge.data.clicks import read_click_log

    queries = corpus = None
    collection = None
    if getattr(args, "collection", None):
        from rerankforge.data.beir import Collection

        collection = Collection(args.collection)
        queries, corpus = collection.queries, collection.corpus
    click_log = read_click_log(paths or args.log, queries=queries, corpus=corpus, strict=args.strict,
                               unshown_clicks=args.unshown_clicks)
    print(click_log.stats.summary())
    return click_log, collection


def _sidecar(path: str | Path, suffix: str) -> Path:
    path = Path(path)
    name = path.name
    for ext in (".gz", ".jsonl", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return path.with_name(name + suffix)


def _estimate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rerankforge.clicks.cascade import fit_cascade
    from rerankforge.clicks.observations import build_observations
    from rerankforge.clicks.pbm import bootstrap_pbm, fit_pbm, identifiable_share, predict_clicks
    from rerankforge.clicks.plot import plot_propensities
    from rerankforge.clicks.propensity import Propensities

    click_log, _ = _read_log(args)
    obs = build_observations(click_log.impressions, args.max_rank, args.min_dwell)
    views, clicks = obs.aggregate()
    pbm = fit_pbm(obs, args.relevance, views=views, clicks=clicks, grid_size=args.grid_size)
    boot = bootstrap_pbm(obs, pbm, args.bootstrap, args.bootstrap_unit, args.confidence, args.seed) \
        if args.bootstrap >= 2 else None
    cascade = fit_cascade(click_log.impressions, max_rank=args.max_rank, min_dwell=args.min_dwell)
    rank_views, rank_clicks = views.sum(0), clicks.sum(0)
    ctr = rank_clicks / rank_views.clip(min=1)
    meta = {
        "model": "pbm", "relevance": args.relevance,
        "grid_size": args.grid_size if args.relevance == "mixture" else None, "log": [str(p) for p in args.log],
        "impressions": obs.num_impressions, "queries": len(obs.queries), "pairs": obs.num_pairs,
        "identifiable_share": identifiable_share(views),
        "em": {"steps": pbm.iterations, "converged": pbm.converged, "log_likelihood": pbm.log_likelihood},
        "bootstrap": {"samples": args.bootstrap, "unit": args.bootstrap_unit, "seed": args.seed} if boot else None,
        "views_per_rank": rank_views.tolist(), "clicks_per_rank": rank_clicks.tolist(),
        "ctr_per_rank": ctr.tolist(), "cascade_examination": cascade.examination.tolist(),
        "min_dwell": args.min_dwell, "skipped": dict(click_log.stats.skipped),
    }
    if args.test_log:
        from rerankforge.clicks.metrics import click_perplexity
        from rerankforge.data.clicks import read_click_log

        test = read_click_log(args.test_log, strict=args.strict, unshown_clicks=args.unshown_clicks)
        meta["test"] = {
            "log": list(args.test_log), "impressions": len(test),
            "pbm": click_perplexity(test.impressions, lambda q, s: predict_clicks(pbm, obs, q, s),
                                    args.max_rank, args.min_dwell),
            "cascade": click_perplexity(test.impressions,
                                        lambda q, s: [cascade.click_probs(a, b) for a, b in zip(q, s)],
                                        args.max_rank, args.min_dwell),
        }
    props = Propensities(pbm.propensity.tolist(), boot.low.tolist() if boot else None,
                         boot.high.tolist() if boot else None, args.confidence if boot else None, meta)
    props.save(args.out)
    plot = args.plot or str(Path(args.out).with_suffix(".png"))
    ctr_norm = (ctr / ctr[0]).tolist() if ctr[0] > 0 else None
    extra = {"cascade (mean P(examined))": cascade.examination.tolist()}
    if ctr_norm:
        extra["CTR / CTR@1 (biased by relevance)"] = ctr_norm
    plot_propensities(plot, props.values, (props.ci_low, props.ci_high) if boot else None, extra=extra,
                      title=f"Position bias: {Path(args.log[0]).name}", confidence=args.confidence)

    table = Table(title=f"PBM propensities ({obs.num_impressions} impressions, {len(obs.queries)} queries"
                        f"{'' if pbm.converged else ', EM NOT converged'})")
    for col in ("rank", "impressions", "clicks", "CTR", "propensity",
                f"{round(100 * args.confidence)}% CI" if boot else "CI", "cascade P(exam)"):
        table.add_column(col, justify="right")
    for r in range(obs.num_ranks):
        ci = f"{boot.low[r]:.3f}-{boot.high[r]:.3f}" if boot else "-"
        table.add_row(str(r + 1), f"{rank_views[r]:.0f}", f"{rank_clicks[r]:.0f}", f"{ctr[r]:.3f}",
                      f"{props.values[r]:.3f}", ci, f"{cascade.examination[r]:.3f}")
    Console().print(table)
    print(f"{100 * meta['identifiable_share']:.1f}% of rows show a document at a rank it also had elsewhere "
          f"(what identifies the curve); EM {pbm.iterations} steps")
    if args.test_log:
        t = meta["test"]
        print(f"held-out click perplexity ({t['impressions']} impressions; lower is better): "
              f"PBM {t['pbm']['perplexity']:.4f}, cascade {t['cascade']['perplexity']:.4f}")
    print(f"wrote {args.out} and {plot}")
    return 0


def _groups(args) -> int:
    from rerankforge.clicks.labels import LabelConfig, click_groups
    from rerankforge.clicks.propensity import load_propensities
    from rerankforge.data.groups import write_groups

    click_log, collection = _read_log(args)
    props = load_propensities(args.propensities) if args.propensities else None
    cfg = LabelConfig(method=args.method, structure=args.structure.replace("-", "_"), label_mode=args.label_mode,
                      max_weight=args.max_weight, min_dwell=args.min_dwell, keep_unclicked=args.keep_unclicked,
                      with_text=not args.no_text, max_rank=args.max_rank)
    groups, stats = click_groups(click_log.impressions, cfg, props, collection.queries, collection.corpus)
    n = write_groups(args.out, groups)
    weights = [c.weight for g in groups for c in g.candidates if c.label and c.weight is not None]
    print(f"{n} groups ({stats.candidates} candidates, {stats.positives} clicked) from {stats.queries} queries "
          f"-> {args.out}")
    if stats.dropped:
        print("dropped: " + ", ".join(f"{k} {v}" for k, v in stats.dropped.items()))
    if weights:
        print(f"weights of clicked candidates: mean {sum(weights) / len(weights):.3f}, max {max(weights):.3f}; "
              f"{stats.clipped_clicks} clicks clipped at {args.max_weight}")
    return 0


def _simulate(args) -> int:
    from dataclasses import asdict

    from rerankforge.clicks.simulate import SimulationConfig, simulate_clicks, true_propensities
    from rerankforge.data.beir import Collection
    from rerankforge.data.clicks import write_click_log
    from rerankforge.utils.io import write_json

    collection = Collection(args.collection)
    qrels = collection.qrels(args.split)
    cfg = SimulationConfig(impressions=args.impressions, top_k=args.top_k, eta=args.eta, eps_pos=args.eps_pos,
                           eps_neg=args.eps_neg, relevance=args.relevance, perturb=args.perturb,
                           perturb_prob=args.perturb_prob, seed=args.seed)
    cfg.validate()
    if args.run:
        from rerankforge.data.trec import read_run

        run = read_run(args.run, collection.queries, collection.corpus)
    else:
        from rerankforge.mining import build_retriever

        retriever = build_retriever("bm25")
        retriever.index(collection.corpus)
        run = retriever.search(collection.split_queries(args.split), args.top_k)
    impressions = simulate_clicks(run, qrels, cfg)
    write_click_log(args.out, impressions)
    truth = _sidecar(args.out, ".sim.json")
    true = true_propensities(cfg.top_k, cfg.eta)
    write_json(truth, {"config": asdict(cfg), "true_propensity": true, "collection": str(collection.root),
                       "split": args.split, "run": args.run or "bm25"})
    clicks = sum(len(i.clicks) for i in impressions)
    print(f"{len(impressions)} impressions over {len({i.query_id for i in impressions})} queries, {clicks} clicks "
          f"-> {args.out}; true propensities -> {truth}")
    print("true propensity: " + " ".join(f"{v:.3f}" for v in true))
    return 0


def _experiment(args) -> int:
    from rerankforge.clicks.experiment import load_experiment_config, run_experiment
    from rerankforge.utils.table import metrics_table

    cfg = load_experiment_config(args.config, args.overrides)
    report = run_experiment(cfg)
    metrics_table({name: report[name] for name in ("bm25", *cfg.arms)},
                  title=f"{Path(cfg.collection).name} {cfg.eval.split}: reranking BM25 top-{cfg.eval.depth}")
    d = report["details"]
    print("propensity  true:      " + " ".join(f"{v:.3f}" for v in report["propensity"]["true"]))
    print("propensity  estimated: " + " ".join(f"{v:.3f}" for v in report["propensity"]["estimated"]))
    print(f"max relative error at ranks 1-{len(report['propensity']['true'])}: "
          f"{100 * d['propensity_max_relative_error']:.1f}%")
    if "ipw_vs_naive_ndcg@10" in d:
        c = d["ipw_vs_naive_ndcg@10"]
        print(f"IPW - naive nDCG@10: {c['delta']:+.4f} over {c['queries']} queries "
              f"(wins {c['wins']}, losses {c['losses']}; paired randomisation p = {c['p_randomization']:.3g})")
    print(f"wrote {Path(cfg.output_dir) / 'clicks_report.json'}")
    return 0
