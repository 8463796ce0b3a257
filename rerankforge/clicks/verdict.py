"""Is position-bias correction worth it on this log? A quick simulation with its estimated curve.

Each (query, document) pair of the log gets its PBM relevance estimate as the simulated truth;
clicks are drawn again on the log's own impressions (same queries, shown lists and counts) from
the estimated examination curve, ``P(click) = theta_rank * gamma_pair``. Each method then orders
every query's shown documents by what it learns from the simulated clicks:

- ``naive``: click-through rate, ``sum_r c_r / sum_r v_r``;
- ``ipw``: clicks weighted by the inverse propensity per view, ``sum_r (c_r / p_r) / sum_r v_r``
  (Joachims et al., WSDM 2017), with the estimated curve;
- ``two_tower``: the relevance tower of a PBM fit on the simulated log (bias per rank learned
  jointly with a free relevance per pair: the product two-tower model without text).

The gain is nDCG@10 against the simulated relevance, per query, averaged over simulations; the
interval is a bootstrap over queries. Ties (documents never clicked) fall back to the log's own
order (mean shown rank) for every method alike.

What it measures is how much the curve distorts the click-based order of documents in lists like
this log's, at this log's size. A text reranker trained on the clicks inherits that distortion only
in part (what it learns from text generalises across positions; Hager et al., SIGIR 2024 found
naive click training as good as IPS/DLA on real clicks), so read the gain as an upper bound: when
it is small, correction will not help; when it is large, measure it with ``clicks sweep``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rerankforge.clicks.observations import Observations

METHODS = ("naive", "ipw", "two_tower")


@dataclass
class VerdictConfig:
    #: simulated logs (each the size of the real one)
    simulations: int = 5
    #: nDCG cut-off
    k: int = 10
    #: a gain below this is "not worth it"
    min_gain: float = 0.01
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0


def _ndcg_per_query(scores: np.ndarray, gains: np.ndarray, tiebreak: np.ndarray, by_query: list[np.ndarray],
                    k: int) -> np.ndarray:
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.full(len(by_query), np.nan)
    for i, rows in enumerate(by_query):
        g = gains[rows]
        ideal = np.sort(g)[::-1][:k]
        idcg = float(ideal @ discount[: len(ideal)])
        if idcg <= 0:
            continue
        # lexsort: last key first -- by score descending, then by the log's mean rank ascending.
        order = np.lexsort((tiebreak[rows], -scores[rows]))[:k]
        out[i] = float(g[order] @ discount[: len(order)]) / idcg
    return out


def correction_verdict(obs: Observations, theta: np.ndarray, gamma: np.ndarray,
                       cfg: VerdictConfig | None = None) -> dict[str, Any]:
    """Expected nDCG@k gain of IPW and two-tower over naive on logs like ``obs`` with examination
    ``theta`` (raw, per rank) and pair relevance ``gamma``; returns the figures and a verdict line."""
    from rerankforge.clicks.pbm import fit_pbm

    cfg = cfg or VerdictConfig()
    if cfg.simulations < 1:
        raise ValueError(f"simulations must be >= 1, got {cfg.simulations}")
    rng = np.random.default_rng(cfg.seed)
    theta = np.clip(np.asarray(theta, dtype=np.float64), 1e-6, 1.0)
    gamma = np.clip(np.asarray(gamma, dtype=np.float64), 0.0, 1.0)
    propensity = theta / theta[0]
    pair_of_row = obs.row_cell // obs.num_ranks
    rank_of_row = obs.row_cell % obs.num_ranks
    p_click = theta[rank_of_row] * gamma[pair_of_row]
    views, _ = obs.aggregate()
    total_views = views.sum(1)
    mean_rank = (views * np.arange(obs.num_ranks)).sum(1) / np.maximum(total_views, 1)
    by_query = [rows for rows in np.split(np.argsort(obs.pair_query, kind="stable"),
                                          np.cumsum(np.bincount(obs.pair_query, minlength=len(obs.queries)))[:-1])]
    per_method = {m: [] for m in METHODS}
    for _ in range(cfg.simulations):
        sim = replace(obs, row_click=(rng.random(len(p_click)) < p_click).astype(np.float64))
        _, clicks = sim.aggregate()
        scores = {
            "naive": clicks.sum(1) / np.maximum(total_views, 1),
            "ipw": (clicks / propensity).sum(1) / np.maximum(total_views, 1),
            "two_tower": fit_pbm(sim, "pair", views=views, clicks=clicks, check=False).gamma,
        }
        for m in METHODS:
            per_method[m].append(_ndcg_per_query(scores[m], gamma, mean_rank, by_query, cfg.k))
    mean = {m: np.nanmean(np.stack(v), axis=0) for m, v in per_method.items()}
    keep = ~np.isnan(mean["naive"])
    n = int(keep.sum())
    if n == 0:
        raise ValueError("no query of the log has a simulated relevant document; nothing to compare")
    boot = rng.integers(0, n, size=(cfg.bootstrap, n))
    lo_q, hi_q = (1 - cfg.confidence) / 2, 1 - (1 - cfg.confidence) / 2
    report: dict[str, Any] = {
        "method": "re-simulated clicks on the log's own impressions from the estimated curve and relevance",
        "simulations": cfg.simulations, "queries": n, "k": cfg.k, "confidence": cfg.confidence,
        f"nDCG@{cfg.k}": {m: float(mean[m][keep].mean()) for m in METHODS},
    }
    gains = {}
    for m in ("ipw", "two_tower"):
        delta = (mean[m] - mean["naive"])[keep]
        resampled = delta[boot].mean(1)
        gains[m] = {"gain": float(delta.mean()), "low": float(np.quantile(resampled, lo_q)),
                    "high": float(np.quantile(resampled, hi_q))}
    report["gain_vs_naive"] = gains
    best = max(gains, key=lambda m: gains[m]["gain"])
    g = gains[best]
    span = f"{g['gain']:+.4f} nDCG@{cfg.k} [{g['low']:+.4f}, {g['high']:+.4f}]"
    if g["low"] > 0 and g["gain"] >= cfg.min_gain:
        worth, text = "yes", (f"worth it: {best} is expected to gain {span} over naive click training on logs like "
                              f"this one (an upper bound for a text reranker: confirm with `clicks sweep`)")
    elif g["high"] < cfg.min_gain:
        worth, text = "no", (f"not worth it: the best correction ({best}) is expected to gain {span}, below "
                             f"{cfg.min_gain}; naive click training should rank as well on logs like this one")
    else:
        worth, text = "unclear", (f"unclear: {best} is expected to gain {span}; the interval straddles the "
                                  f"{cfg.min_gain} threshold (more impressions would settle it)")
    report.update(worth_it=worth, best=best, verdict=text, min_gain=cfg.min_gain)
    return report
