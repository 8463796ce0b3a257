"""Cascade click model (Craswell, Zoeter, Taylor and Ramsey, WSDM 2008, "An experimental
comparison of click position-bias models").

The user scans top-down, clicks the first attractive document (probability alpha_{q,d}) and
stops. Rank 1 is always examined; rank r is examined iff nothing above it was clicked:

    P(E_r = 1) = prod_{i<r} (1 - alpha_{q,d_i}),    P(C_r = 1) = alpha_{q,d_r} P(E_r = 1).

The maximum-likelihood alpha is (clicks at the first click) / (times examined), where a
document counts as examined when it sits at or above the first click (every shown document
of an impression without clicks). The model allows one click per impression, so only the first
click of a multi-click impression is used. Alpha is smoothed towards the log's mean with
``prior`` pseudo-observations so rarely examined pairs are not 0 or 1.

Its "propensity" curve is the mean of P(E_r) over the log's impressions: unlike PBM's it
depends on the relevance of what was shown above, which is why it is reported for comparison
rather than used for inverse-propensity weighting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rerankforge.data.clicks import Impression


@dataclass
class CascadeResult:
    attractiveness: dict[tuple[str, str], float]
    mean_attractiveness: float
    examination: np.ndarray  # mean P(E_r) per rank (0-based) over the fitted log
    impressions: int

    def alpha(self, query_id: str, doc: str) -> float:
        return self.attractiveness.get((query_id, doc), self.mean_attractiveness)

    def click_probs(self, query_id: str, shown: Sequence[str]) -> np.ndarray:
        """Marginal P(C_r = 1) per rank."""
        a = np.array([self.alpha(query_id, d) for d in shown])
        exam = np.concatenate([[1.0], np.cumprod(1.0 - a)[:-1]])
        return a * exam


def _first_click(imp: Impression, min_dwell: float | None) -> int | None:
    clicked = imp.clicked(min_dwell)
    for r, d in enumerate(imp.shown):
        if d in clicked:
            return r
    return None


def fit_cascade(impressions: Sequence[Impression], prior: float = 1.0, max_rank: int | None = None,
                min_dwell: float | None = None) -> CascadeResult:
    exams: dict[tuple[str, str], float] = {}
    clicks: dict[tuple[str, str], float] = {}
    for imp in impressions:
        shown = imp.shown if max_rank is None else imp.shown[:max_rank]
        first = _first_click(imp, min_dwell)
        last = len(shown) - 1 if first is None or first >= len(shown) else first
        for r in range(last + 1):
            key = (imp.query_id, shown[r])
            exams[key] = exams.get(key, 0.0) + 1.0
        if first is not None and first < len(shown):
            key = (imp.query_id, shown[first])
            clicks[key] = clicks.get(key, 0.0) + 1.0
    total_e = sum(exams.values())
    mean = sum(clicks.values()) / total_e if total_e else 0.0
    alpha = {k: (clicks.get(k, 0.0) + prior * mean) / (e + prior) for k, e in exams.items()}
    result = CascadeResult(alpha, mean, np.zeros(0), len(impressions))
    depth = max((len(i.shown) for i in impressions), default=0)
    if max_rank is not None:
        depth = min(depth, max_rank)
    sums = np.zeros(depth)
    counts = np.zeros(depth)
    for imp in impressions:
        shown = imp.shown[:depth]
        a = np.array([result.alpha(imp.query_id, d) for d in shown])
        exam = np.concatenate([[1.0], np.cumprod(1.0 - a)[:-1]])
        sums[: len(shown)] += exam
        counts[: len(shown)] += 1
    result.examination = sums / np.maximum(counts, 1)
    return result
