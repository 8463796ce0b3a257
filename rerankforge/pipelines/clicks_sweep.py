"""The click sweep: when does position-bias correction help? A grid of simulated click logs
(settings) x learning methods, every method trained on the same log and evaluated on real
judgments.

    rerankforge clicks sweep --config configs/clicks_sweep.yaml [key=value ...]

Per setting (``settings[i].simulation`` overrides the shared ``simulation`` section):

1. BM25 over the train (or dev) queries to the depth the logging ranker needs; simulate the
   training log and, with another seed, a held-out log from the same logging ranker and curve.
2. PBM propensities by EM from the training log (what ``ipw`` uses; a user would get them from
   ``clicks estimate``).
3. Aggregated click groups with per-rank counts (``naive`` labels, and ``ipw`` labels), then one
   model per method, same start, seed and groups order, with the method's loss
   (``losses.<method>``): naive / ipw: listwise softmax CE on (IPW) click rates; two_tower /
   trust_bias: the joint click likelihood with a learned bias tower; dla: the dual learning
   algorithm. Only the relevance tower is exported.
4. Each model reranks BM25 top-``eval.depth`` of the ``eval.split`` (test) queries; per-query
   nDCG@10 gives the paired randomisation p and a bootstrap interval of the difference to naive.
5. Held-out click log-likelihood of each method's click model: two_tower / trust_bias use their
   own towers; naive, ipw, dla and a two_tower with ``relevance: listwise`` (a listwise ranker with
   no click calibration) use P(click) = theta_r * sigmoid(a s + c) with theta = 1 (naive: the
   position-blind model it assumes), the EM curve (ipw) or the learned curve (dla, two_tower), and
   (a, c) fitted on the training log.

Outputs under ``output_dir``: ``sweep_report.json`` (``{"settings": [{"name", "<method>":
{metric: value, "p_vs_naive": p, ...}}]}``), ``sweep_report.md`` (the table), ``sweep_delta.png``
(delta nDCG@10 vs naive per setting, with intervals and p), ``sweep_details.json`` (curves,
timings, sizes) and ``<setting>/<method>/`` (model, training summary, runs).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from rerankforge.clicks.labels import LabelConfig
from rerankforge.clicks.simulate import SimulationConfig
from rerankforge.errors import ConfigError
from rerankforge.pipelines.clicks_experiment import EstimationConfig, ExperimentEvalConfig

METHODS = ("naive", "ipw", "two_tower", "dla", "trust_bias")
#: methods that train on IPW click labels (the others read naive labels or only the counts)
_IPW_GROUPS = ("ipw",)


def _default_losses() -> dict[str, Any]:
    return {"naive": [{"name": "listwise_ce"}], "ipw": [{"name": "listwise_ce"}],
            "two_tower": [{"name": "two_tower", "form": "pbm"}], "dla": [{"name": "dla"}],
            "trust_bias": [{"name": "trust_bias"}]}


@dataclass
class SweepSetting:
    name: str = MISSING
    #: overrides of the shared ``simulation`` section (any SimulationConfig key)
    simulation: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepEvalConfig(ExperimentEvalConfig):
    #: resamples of the paired randomisation test and of the bootstrap interval
    n_resamples: int = 10_000
    confidence: float = 0.95
    #: also evaluate the model every method starts from (details and table: "start")
    include_init: bool = True


@dataclass
class ClicksSweepConfig:
    output_dir: str = "runs/clicks_sweep"
    collection: str = MISSING
    #: queries the clicks are simulated on (train or dev; never the evaluation split)
    train_split: str = "train"
    #: simulate on the first N of them only (training cost grows with queries, not impressions)
    max_train_queries: Optional[int] = None
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    settings: list[SweepSetting] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["naive", "ipw", "two_tower", "dla"])
    #: per method: a loss spec (list of {name, ...}) for the train section
    losses: dict[str, Any] = field(default_factory=_default_losses)
    estimation: EstimationConfig = field(default_factory=lambda: EstimationConfig(bootstrap=0))
    labels: LabelConfig = field(default_factory=lambda: LabelConfig(with_text=False))
    #: impressions of the held-out log (same queries and logging ranker, another seed); 0: none
    heldout_impressions: int = 10_000
    #: a TrainConfig without output_dir / data.train_groups / loss (set per setting and method)
    train: dict[str, Any] = field(default_factory=dict)
    eval: SweepEvalConfig = field(default_factory=SweepEvalConfig)

    def validate(self) -> None:
        if not self.settings:
            raise ConfigError("settings: the sweep needs at least one setting ({name: ..., simulation: {...}})")
        names = [s.name for s in self.settings]
        if len(set(names)) != len(names):
            raise ConfigError(f"settings: names must be unique, got {names}")
        if "naive" not in self.methods:
            raise ConfigError("methods: 'naive' is the baseline every other method is compared with; keep it")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"methods: unknown method {m!r} (choose from {', '.join(METHODS)})")
            if m not in self.losses:
                raise ConfigError(f"losses: no loss for method {m!r}")
        if self.train_split == self.eval.split:
            raise ConfigError(f"train_split and eval.split are both {self.train_split!r}: clicks must be simulated "
                              "on other queries than the ones evaluated")
        for s in self.settings:
            setting_simulation(self, s)
        _train_config(self, "x", "groups.jsonl", "naive")


def load_sweep_config(path: str | Path | None, overrides: list[str] | None = None,
                      values: dict | None = None) -> ClicksSweepConfig:
    from rerankforge.config import load_config

    return load_config(ClicksSweepConfig, path, overrides or (), values)


def setting_simulation(cfg: ClicksSweepConfig, setting: SweepSetting) -> SimulationConfig:
    from rerankforge.config import config_from_dict

    merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(cfg.simulation),
                                                    OmegaConf.create(dict(setting.simulation or {}))))
    sim = config_from_dict(SimulationConfig, merged, f"settings[{setting.name}].simulation")
    sim.validate()
    return sim


def _train_config(cfg: ClicksSweepConfig, out: str, groups: str, method: str):
    from rerankforge.config import config_from_dict
    from rerankforge.train.config import TrainConfig

    loss = OmegaConf.to_container(OmegaConf.create({"loss": cfg.losses[method]}))["loss"]
    section = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(cfg.train), {
        "output_dir": out, "data": {"train_groups": groups, "collection": cfg.collection}}))
    section["loss"] = loss if isinstance(loss, list) else [loss]
    return config_from_dict(TrainConfig, section, f"train section ({method})")


# ------------------------------------------------------------------------------ click models
def _cell_counts(impressions, depth: int):
    """{(qid, doc): (views[depth], clicks[depth])} of a log."""
    import numpy as np

    cells: dict[tuple[str, str], tuple[Any, Any]] = {}
    for imp in impressions:
        clicked = set(imp.clicks)
        for r, d in enumerate(imp.shown[:depth]):
            v, c = cells.setdefault((imp.query_id, d), (np.zeros(depth), np.zeros(depth)))
            v[r] += 1
            c[r] += d in clicked
    return cells


def _arrays(cells, scores):
    import numpy as np

    keys = list(cells)
    s = np.array([scores[k] for k in keys], dtype=np.float64)
    views = np.stack([cells[k][0] for k in keys])
    clicks = np.stack([cells[k][1] for k in keys])
    return s, views, clicks


def _log_likelihood(p, views, clicks) -> dict[str, float]:
    """Mean log-likelihood per (impression, rank) row and the mean per-rank perplexity."""
    import numpy as np

    p = np.clip(p, 1e-6, 1 - 1e-6)
    ll = clicks * np.log(p) + (views - clicks) * np.log1p(-p)
    rows = views.sum(0)
    per_rank = np.exp(-ll.sum(0) / np.maximum(rows, 1)) ** (1 / math.log(2))  # 2 ** (-mean log2 likelihood)
    return {"click_loglik": float(ll.sum() / max(views.sum(), 1)),
            "click_perplexity": float(per_rank[rows > 0].mean())}


def _fit_calibration(s, views, clicks, theta):
    """(a, c) maximising the training log's likelihood under P = theta_r * sigmoid(a s + c)."""
    import torch

    s_t = torch.tensor(s)
    v, c = torch.tensor(views), torch.tensor(clicks)
    th = torch.tensor(theta, dtype=torch.float64)[None, : v.shape[1]].clamp(1e-6, 1.0)
    a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    mu, sd = float(s_t.mean()), float(s_t.std()) or 1.0
    z = (s_t - mu) / sd
    opt = torch.optim.LBFGS([a, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        p = (th * torch.sigmoid(a * z + b)[:, None]).clamp(1e-9, 1 - 1e-9)
        loss = -(c * torch.log(p) + (v - c) * torch.log1p(-p)).sum() / v.sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, b = float(a.detach()), float(b.detach())
    return a / sd, b - a * mu / sd


def click_model_fit(method: str, loss_state: dict | None, theta, train_cells, heldout_cells, scores):
    """Held-out log-likelihood of ``method``'s click model (see the module docstring)."""
    import numpy as np

    s_tr, v_tr, c_tr = _arrays(train_cells, scores)
    s_ho, v_ho, c_ho = _arrays(heldout_cells, scores)
    depth = v_ho.shape[1]
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    state = next(iter(loss_state.values())) if loss_state else None
    if method == "two_tower" and state and state.get("relevance") == "listwise":
        # its relevance tower is a listwise ranker with no click calibration: fitted below, as IPW's is
        theta = state["propensity"]
    elif method == "two_tower" and state:
        b = np.array(state["bias_logit"] + [state["bias_logit"][-1]] * depth)[:depth]
        rel = state["relevance_scale"] * s_ho + state["relevance_offset"]
        p = sig(rel[:, None] + b) if state["form"] == "additive" else sig(b)[None, :] * sig(rel)[:, None]
        return _log_likelihood(p, v_ho, c_ho)
    if method == "trust_bias" and state:
        alpha = np.array(state["alpha"] + [state["alpha"][-1]] * depth)[:depth]
        beta = np.array(state["beta"] + [state["beta"][-1]] * depth)[:depth]
        gamma = sig(state["relevance_scale"] * s_ho + state["relevance_offset"])
        return _log_likelihood(alpha[None, :] * gamma[:, None] + beta[None, :], v_ho, c_ho)
    th = np.ones(depth) if theta is None else np.array(list(theta) + [theta[-1]] * depth)[:depth]
    a, c = _fit_calibration(s_tr, v_tr, c_tr, th)
    return _log_likelihood(th[None, :] * sig(a * s_ho + c)[:, None], v_ho, c_ho)


# ---------------------------------------------------------------------------------- the sweep
def run_sweep(cfg: ClicksSweepConfig, progress: bool = True) -> dict[str, Any]:
    from rerankforge.clicks.labels import click_groups
    from rerankforge.clicks.observations import build_observations
    from rerankforge.clicks.pbm import fit_pbm
    from rerankforge.clicks.propensity import Propensities
    from rerankforge.clicks.simulate import examination_curve, retrieval_depth, simulate_clicks
    from rerankforge.data.beir import Collection
    from rerankforge.data.clicks import write_click_log
    from rerankforge.data.groups import write_groups
    from rerankforge.eval import per_query
    from rerankforge.eval.significance import compare, paired_bootstrap_ci
    from rerankforge.models import load_reranker
    from rerankforge.pipelines import steps
    from rerankforge.train import train
    from rerankforge.utils.io import write_json

    t_all = time.perf_counter()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    collection = Collection(cfg.collection)
    train_qrels = collection.qrels(cfg.train_split)
    train_queries = collection.split_queries(cfg.train_split)
    if cfg.max_train_queries:
        train_queries = dict(list(train_queries.items())[: cfg.max_train_queries])
    ev = cfg.eval
    test_queries = collection.split_queries(ev.split)
    if ev.max_queries:
        test_queries = dict(list(test_queries.items())[: ev.max_queries])
    test_run = steps.first_stage(collection, test_queries, "bm25", ev.depth)
    test_qrels = {q: j for q, j in collection.qrels(ev.split).items() if q in test_run}
    measures = list(ev.measures)
    if "nDCG@10" not in measures:
        measures = ["nDCG@10", *measures]

    details: dict[str, Any] = {"collection": str(collection.root), "train_split": cfg.train_split,
                               "train_queries": len(train_queries), "eval_split": ev.split,
                               "test_queries": len(test_run), "depth": ev.depth, "settings": {}}
    start_row = None
    if ev.include_init:
        t = time.perf_counter()
        from rerankforge.train.build import build_model

        tc = _train_config(cfg, str(out / "start"), "unused.jsonl", "naive")
        rep = steps.evaluate_reranker(build_model(tc.model), collection, ev.split, test_run, ev.depth, measures,
                                      ev.batch_size, tc.bf16, progress=progress, max_queries=ev.max_queries)
        start_row = rep["reranked"]
        details["bm25"] = rep["first_stage"]
        details["start"] = {**start_row, "seconds": time.perf_counter() - t}

    settings_out = []
    for setting in cfg.settings:
        t_setting = time.perf_counter()
        sim = setting_simulation(cfg, setting)
        sdir = out / setting.name
        sdir.mkdir(parents=True, exist_ok=True)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        logged = steps.first_stage(collection, train_queries, "bm25", retrieval_depth(sim))
        impressions = simulate_clicks(logged, train_qrels, sim)
        write_click_log(sdir / "clicks.jsonl.gz", impressions)
        heldout = []
        if cfg.heldout_impressions:
            heldout = simulate_clicks(logged, train_qrels, replace(sim, impressions=cfg.heldout_impressions,
                                                                   seed=sim.seed + 1_000_003))
            write_click_log(sdir / "heldout.jsonl.gz", heldout)
        true = examination_curve(sim)
        timings["simulate_s"] = time.perf_counter() - t

        t = time.perf_counter()
        obs = build_observations(impressions)
        pbm = fit_pbm(obs, cfg.estimation.relevance)
        em_curve = pbm.propensity.tolist()
        props = Propensities(em_curve, meta={"model": "pbm", "source": str(sdir / "clicks.jsonl.gz")})
        props.save(sdir / "propensities.json")
        timings["estimate_s"] = time.perf_counter() - t

        groups_path = {}
        label_stats = {}
        for kind in ("naive", "ipw"):
            if kind == "ipw" and not any(m in _IPW_GROUPS for m in cfg.methods):
                continue
            lc = LabelConfig(**{**asdict(cfg.labels), "method": kind, "structure": "aggregate", "with_counts": True})
            groups, stats = click_groups(impressions, lc, props, collection.queries, collection.corpus)
            groups_path[kind] = sdir / f"groups_{kind}.jsonl"
            write_groups(groups_path[kind], groups)
            label_stats[kind] = stats.to_json()

        depth = sim.top_k
        train_cells = _cell_counts(impressions, depth)
        heldout_cells = _cell_counts(heldout, depth) if heldout else None
        pair_keys = list(dict.fromkeys([*train_cells, *(heldout_cells or {})]))

        per_q: dict[str, dict[str, float]] = {}
        rows: dict[str, dict[str, Any]] = {}
        method_details: dict[str, Any] = {}
        for method in cfg.methods:
            t = time.perf_counter()
            gpath = groups_path["ipw" if method in _IPW_GROUPS else "naive"]
            tc = _train_config(cfg, str(sdir / method), str(gpath), method)
            tc.progress = progress
            model_dir = train(tc)
            summary = json.loads((sdir / method / "train_summary.json").read_text())
            timings[f"train_{method}_s"] = time.perf_counter() - t
            t = time.perf_counter()
            model = load_reranker(model_dir)
            rep = steps.evaluate_reranker(model, collection, ev.split, test_run, ev.depth, measures, ev.batch_size,
                                          tc.bf16, out_dir=sdir / method, progress=progress,
                                          max_queries=ev.max_queries)
            reranked = rep.pop("_runs")["reranked"]
            row: dict[str, Any] = dict(rep["reranked"])
            per_q[method] = per_query(test_qrels, reranked, "nDCG@10")
            loss_state = summary.get("loss_state")
            curve = {"ipw": em_curve, "naive": None}.get(method)
            if curve is None and loss_state:
                curve = next(iter(loss_state.values())).get("propensity")
            if curve is not None and method != "naive":
                k = min(10, len(true), len(curve))
                row["propensity_max_rel_error@10"] = max(abs(curve[r] / true[r] - 1.0) for r in range(k))
            if heldout_cells:
                texts_q = [collection.queries[q] for q, _ in pair_keys]
                texts_d = [collection.corpus.text(d) for _, d in pair_keys]
                raw = model.score_pairs(texts_q, texts_d, batch_size=ev.batch_size, bf16=tc.bf16)
                scores = dict(zip(pair_keys, map(float, raw)))
                theta = {"ipw": em_curve}.get(method) or (curve if method == "dla" else None)
                row.update(click_model_fit(method, loss_state, theta, train_cells, heldout_cells, scores))
            timings[f"eval_{method}_s"] = time.perf_counter() - t
            rows[method] = row
            method_details[method] = {"model": str(model_dir), "propensity": curve, "loss_state": loss_state,
                                      "train_steps": summary["global_step"], "train_pairs": summary["pairs"],
                                      "train_seconds": summary["train_seconds"]}
        for method in cfg.methods:
            if method == "naive":
                continue
            c = compare(per_q["naive"], per_q[method], n_resamples=ev.n_resamples)
            lo, hi = paired_bootstrap_ci(per_q["naive"], per_q[method], ev.confidence, ev.n_resamples)
            rows[method].update({"p_vs_naive": c["p_randomization"], "delta_vs_naive": c["delta"],
                                 "ci_vs_naive": [lo, hi], "wins_vs_naive": c["wins"], "losses_vs_naive": c["losses"]})
        timings["total_s"] = time.perf_counter() - t_setting
        settings_out.append({"name": setting.name, **rows})
        details["settings"][setting.name] = {
            "simulation": asdict(sim), "true_propensity": true, "em_propensity": em_curve,
            "impressions": len(impressions), "clicks": int(sum(len(i.clicks) for i in impressions)),
            "heldout_impressions": len(heldout), "labels": label_stats, "methods": method_details,
            "timings_s": timings}
        report = {"settings": settings_out}
        write_json(out / "sweep_report.json", report)  # after every setting: a long sweep leaves partial results
        write_json(out / "sweep_details.json", details)
    details["total_s"] = time.perf_counter() - t_all
    write_json(out / "sweep_details.json", details)
    write_markdown(out / "sweep_report.md", report, details, cfg)
    plot_sweep(out / "sweep_delta.png", report, ev.confidence)
    return report


# ------------------------------------------------------------------------------------ output
def _fmt(v, digits=4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def write_markdown(path: Path, report: dict, details: dict, cfg: ClicksSweepConfig) -> None:
    from rerankforge.utils.io import atomic_write

    lines = [f"Click sweep on {Path(details['collection']).name}: clicks simulated on {details['train_queries']} "
             f"{details['train_split']} queries, evaluated on {details['test_queries']} {details['eval_split']} "
             f"queries (BM25 top-{details['depth']} reranked).", ""]
    if "start" in details:
        lines.append(f"BM25 nDCG@10 {_fmt(details['bm25'].get('nDCG@10'))}; start model (before clicks) "
                     f"{_fmt(details['start'].get('nDCG@10'))}.")
        lines.append("")
    pct = round(100 * cfg.eval.confidence)
    lines += [f"| setting | method | nDCG@10 | Δ vs naive [{pct}% CI] | p (randomisation) | held-out click LL | "
              "click perplexity | max rel. err. of curve @1-10 |",
              "|---|---|---|---|---|---|---|---|"]
    for s in report["settings"]:
        for method, row in s.items():
            if method == "name":
                continue
            delta = "-" if "delta_vs_naive" not in row else (
                f"{row['delta_vs_naive']:+.4f} [{row['ci_vs_naive'][0]:+.4f}, {row['ci_vs_naive'][1]:+.4f}]")
            err = row.get("propensity_max_rel_error@10")
            lines.append(f"| {s['name']} | {method} | {_fmt(row.get('nDCG@10'))} | {delta} | "
                         f"{_fmt(row.get('p_vs_naive'), 3)} | {_fmt(row.get('click_loglik'))} | "
                         f"{_fmt(row.get('click_perplexity'))} | {'-' if err is None else f'{100 * err:.1f}%'} |")
    lines += ["", "Settings:"]
    for name, d in details["settings"].items():
        sim = d["simulation"]
        curve = f"propensity file {sim['propensity_file']}" if sim.get("propensity_file") else f"eta={sim['eta']}"
        lines.append(f"- **{name}**: {curve}, top {sim['top_k']}, logger {sim['logger']}"
                     f"{' (noise ' + str(sim['logger_noise']) + ')' if sim['logger'] == 'degraded' else ''}, "
                     f"{d['impressions']} impressions ({sim['perturb']} {sim['perturb_prob']}), eps "
                     f"{sim['eps_neg']}/{sim['eps_pos']}, {sim['relevance']} relevance; "
                     f"{d['timings_s']['total_s'] / 60:.1f} min")
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")


def plot_sweep(path: Path, report: dict, confidence: float) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from rerankforge.utils.io import save_figure

    settings = report["settings"]
    methods = [m for m in dict.fromkeys(k for s in settings for k in s) if m not in ("name", "naive")]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(settings) + 2), 4), dpi=110)
    try:
        width = 0.8 / max(len(methods), 1)
        for j, method in enumerate(methods):
            xs, ys, lo, hi, ps = [], [], [], [], []
            for i, s in enumerate(settings):
                row = s.get(method)
                if not row or "delta_vs_naive" not in row:
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(row["delta_vs_naive"])
                lo.append(row["delta_vs_naive"] - row["ci_vs_naive"][0])
                hi.append(row["ci_vs_naive"][1] - row["delta_vs_naive"])
                ps.append(row["p_vs_naive"])
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, color=f"C{j}", label=method)
            for x, y, p in zip(xs, ys, ps):
                ax.annotate(f"p={p:.2g}", (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(settings)), [s["name"] for s in settings], rotation=15)
        ax.set_ylabel(f"ΔnDCG@10 vs naive ({round(100 * confidence)}% bootstrap CI)")
        ax.set_title("Bias correction vs naive clicks (p: paired randomisation)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
