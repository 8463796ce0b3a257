"""``rerankforge clicks {estimate,groups,simulate,experiment}``: learning to rank from click logs.

    rerankforge clicks estimate --log LOG.jsonl --out propensities.json
    rerankforge clicks groups --log LOG --collection DIR --propensities P.json --method ipw --out GROUPS.jsonl
    rerankforge clicks simulate --collection DIR --split train --out LOG.jsonl.gz
    rerankforge clicks experiment --config configs/clicks_nfcorpus.yaml [key=value ...]
    rerankforge clicks sweep --config configs/clicks_sweep.yaml [key=value ...]
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    from rerankforge.clicks.tasks import ClickGroupsConfig, EstimateConfig, SimulateConfig
    from rerankforge.config import add_config_args
    from rerankforge.pipelines.clicks_experiment import ClicksExperimentConfig
    from rerankforge.pipelines.clicks_sweep import ClicksSweepConfig

    p = sub.add_parser("clicks", help="click logs: position bias, click labels, simulation, experiment",
                       description="Unbiased learning to rank from click logs.")
    verbs = p.add_subparsers(dest="clicks_command", metavar="ACTION", required=True)
    add_config_args(verbs.add_parser("estimate", help="estimate the position-bias (propensity) curve of a click log"),
                    EstimateConfig, example="bootstrap=100")
    add_config_args(verbs.add_parser("groups", help="training groups (rerankforge.group/1) from a click log"),
                    ClickGroupsConfig, example="max_weight=10")
    add_config_args(verbs.add_parser("simulate", help="simulate a PBM click log on real judgments and a real ranking"),
                    SimulateConfig, example="simulation.eta=2")
    add_config_args(verbs.add_parser("experiment", help="simulate, estimate, train naive vs IPW, evaluate (one config)"),
                    ClicksExperimentConfig, config_required=True, example="simulation.impressions=5000")
    add_config_args(verbs.add_parser("sweep", help="grid of simulated logs x methods (naive, ipw, two_tower, dla): "
                                                   "when does bias correction help?"),
                    ClicksSweepConfig, config_required=True, example="max_train_queries=100")
    return p


def run(args) -> int:
    return {"estimate": _estimate, "groups": _groups, "simulate": _simulate,
            "experiment": _experiment, "sweep": _sweep}[args.clicks_command](args)


def _estimate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rerankforge.clicks.tasks import EstimateConfig, estimate
    from rerankforge.config import config_from_args

    cfg = config_from_args(EstimateConfig, args)
    est = estimate(cfg)
    print(est.log_summary)
    props, meta, boot = est.propensities, est.meta, est.bootstrap
    table = Table(title=f"PBM propensities ({meta['impressions']} impressions, {meta['queries']} queries"
                        f"{'' if est.converged else ', EM NOT converged'})")
    for col in ("rank", "impressions", "clicks", "CTR", "propensity",
                f"{round(100 * cfg.confidence)}% CI" if boot else "CI", "cascade P(exam)"):
        table.add_column(col, justify="right")
    for r in range(est.num_ranks):
        ci = f"{boot.low[r]:.3f}-{boot.high[r]:.3f}" if boot else "-"
        table.add_row(str(r + 1), f"{est.rank_views[r]:.0f}", f"{est.rank_clicks[r]:.0f}", f"{est.ctr[r]:.3f}",
                      f"{props.values[r]:.3f}", ci, f"{est.cascade.examination[r]:.3f}")
    Console().print(table)
    print(f"{100 * meta['identifiable_share']:.1f}% of rows show a document at a rank it also had elsewhere "
          f"(what identifies the curve); EM {meta['em']['steps']} steps")
    if cfg.test_log:
        t = meta["test"]
        print(f"held-out click perplexity ({t['impressions']} impressions; lower is better): "
              f"PBM {t['pbm']['perplexity']:.4f}, cascade {t['cascade']['perplexity']:.4f}")
    if "correction" in meta:
        c = meta["correction"]
        nd = c[f"nDCG@{c['k']}"]
        print(f"is correction worth it? ({c['simulations']} logs re-simulated with this curve, {c['queries']} queries; "
              f"nDCG@{c['k']} naive {nd['naive']:.4f}, ipw {nd['ipw']:.4f}, two-tower {nd['two_tower']:.4f})\n"
              f"  {c['verdict']}")
    print(f"wrote {cfg.out} and {est.plot}")
    return 0


def _groups(args) -> int:
    from rerankforge.clicks.tasks import ClickGroupsConfig, click_groups_from_log
    from rerankforge.config import config_from_args

    cfg = config_from_args(ClickGroupsConfig, args)
    groups, stats, summary = click_groups_from_log(cfg)
    print(summary)
    weights = [c.weight for g in groups for c in g.candidates if c.label and c.weight is not None]
    print(f"{len(groups)} groups ({stats.candidates} candidates, {stats.positives} clicked) from {stats.queries} "
          f"queries -> {cfg.out}")
    if stats.dropped:
        print("dropped: " + ", ".join(f"{k} {v}" for k, v in stats.dropped.items()))
    if weights:
        print(f"weights of clicked candidates: mean {sum(weights) / len(weights):.3f}, max {max(weights):.3f}; "
              f"{stats.clipped_clicks} clicks clipped at {cfg.max_weight}")
    return 0


def _simulate(args) -> int:
    from rerankforge.clicks.tasks import SimulateConfig, simulate_log
    from rerankforge.config import config_from_args

    cfg = config_from_args(SimulateConfig, args)
    out = simulate_log(cfg)
    print(f"{out['impressions']} impressions over {out['queries']} queries, {out['clicks']} clicks "
          f"-> {cfg.out}; true propensities -> {out['truth']}")
    print("true propensity: " + " ".join(f"{v:.3f}" for v in out["true_propensity"]))
    return 0


def _experiment(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.pipelines.clicks_experiment import ClicksExperimentConfig, run_experiment
    from rerankforge.utils.table import metrics_table

    cfg = config_from_args(ClicksExperimentConfig, args)
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


def _sweep(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.pipelines.clicks_sweep import ClicksSweepConfig, run_sweep

    cfg = config_from_args(ClicksSweepConfig, args)
    run_sweep(cfg, progress=cfg.train.get("progress", True))
    out = Path(cfg.output_dir)
    print((out / "sweep_report.md").read_text())
    print(f"wrote {out / 'sweep_report.json'}, {out / 'sweep_report.md'} and {out / 'sweep_delta.png'}")
    return 0
