"""Held-out evaluation of click models: per-rank click perplexity and log-likelihood.

Perplexity at rank r (Dupret and Piwowarski, SIGIR 2008; the standard click-model measure):

    PPL_r = 2 ** ( -1/N_r * sum_i [c_ir log2 p_ir + (1 - c_ir) log2 (1 - p_ir)] )

with p_ir the model's marginal click probability. 1 is perfect, 2 is a coin flip; the overall
figure is the mean over ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rerankforge.data.clicks import Impression

_EPS = 1e-6


def click_perplexity(impressions: Sequence[Impression], predict: Callable[[list[str], list[list[str]]], list],
                     max_rank: int | None = None, min_dwell: float | None = None) -> dict[str, object]:
    depth = max(len(i.shown) for i in impressions)
    if max_rank is not None:
        depth = min(depth, max_rank)
    probs = predict([i.query_id for i in impressions], [i.shown[:depth] for i in impressions])
    ll = np.zeros(depth)
    n = np.zeros(depth)
    for imp, p in zip(impressions, probs):
        clicked = imp.clicked(min_dwell)
        p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
        c = np.array([d in clicked for d in imp.shown[:depth]], dtype=np.float64)
        ll[: len(c)] += c * np.log2(p) + (1 - c) * np.log2(1 - p)
        n[: len(c)] += 1
    per_rank = np.power(2.0, -ll / np.maximum(n, 1))
    return {"perplexity": float(per_rank[n > 0].mean()), "perplexity_per_rank": per_rank.tolist(),
            "log_likelihood_per_impression": float(ll.sum() * np.log(2) / len(impressions))}
