"""Click logs as arrays: one row per (impression, rank), aggregated into dense
``[pairs, ranks]`` view and click counts per (query, document) pair — all that the
position-based model needs.

Aggregation makes EM cost proportional to the number of distinct pairs, not to the number of
impressions, and a bootstrap resample is just a reweighting of the impressions
(``aggregate(weights)``), so no impression is ever copied. The matrices are dense: fine for
the usual 10-50 ranks (``pairs x ranks`` floats each).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rerankforge.data.clicks import Impression
from rerankforge.errors import ConfigError


@dataclass
class Observations:
    queries: list[str]
    docs: list[str]
    #: (query id, doc id) per pair; ``pair_query`` / ``pair_doc`` index ``queries`` / ``docs``
    pairs: list[tuple[str, str]]
    pair_query: np.ndarray
    pair_doc: np.ndarray
    #: per (impression, rank) row: flat index pair * num_ranks + rank (0-based), impression, click
    row_cell: np.ndarray
    row_impression: np.ndarray
    row_click: np.ndarray
    impression_query: np.ndarray
    num_ranks: int

    @property
    def num_impressions(self) -> int:
        return len(self.impression_query)

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def aggregate(self, impression_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(views, clicks)``, each ``[pairs, ranks]``; impression i counted ``impression_weights[i]`` times."""
        size = self.num_pairs * self.num_ranks
        if impression_weights is None:
            views = np.bincount(self.row_cell, minlength=size).astype(np.float64)
            clicks = np.bincount(self.row_cell, weights=self.row_click, minlength=size)
        else:
            w = impression_weights[self.row_impression]
            views = np.bincount(self.row_cell, weights=w, minlength=size)
            clicks = np.bincount(self.row_cell, weights=w * self.row_click, minlength=size)
        shape = (self.num_pairs, self.num_ranks)
        return views.reshape(shape), clicks.reshape(shape)


def build_observations(impressions: Sequence[Impression], max_rank: int | None = None,
                       min_dwell: float | None = None) -> Observations:
    """Index impressions; ranks deeper than ``max_rank`` are ignored (None: all)."""
    if not impressions:
        raise ConfigError("no impressions to estimate from")
    num_ranks = max(len(i.shown) for i in impressions)
    if max_rank is not None:
        num_ranks = min(num_ranks, max_rank)
    q_index: dict[str, int] = {}
    d_index: dict[str, int] = {}
    p_index: dict[tuple[int, int], int] = {}
    pair_query: list[int] = []
    pair_doc: list[int] = []
    row_cell: list[int] = []
    row_imp: list[int] = []
    row_click: list[float] = []
    imp_query: list[int] = []
    for i, imp in enumerate(impressions):
        qi = q_index.setdefault(imp.query_id, len(q_index))
        imp_query.append(qi)
        clicked = imp.clicked(min_dwell)
        for r, doc in enumerate(imp.shown[:num_ranks]):
            di = d_index.setdefault(doc, len(d_index))
            pi = p_index.get((qi, di))
            if pi is None:
                pi = p_index[qi, di] = len(pair_query)
                pair_query.append(qi)
                pair_doc.append(di)
            row_cell.append(pi * num_ranks + r)
            row_imp.append(i)
            row_click.append(1.0 if doc in clicked else 0.0)
    queries = list(q_index)
    docs = list(d_index)
    return Observations(
        queries=queries,
        docs=docs,
        pairs=[(queries[q], docs[d]) for q, d in zip(pair_query, pair_doc)],
        pair_query=np.asarray(pair_query, dtype=np.int64),
        pair_doc=np.asarray(pair_doc, dtype=np.int64),
        row_cell=np.asarray(row_cell, dtype=np.int64),
        row_impression=np.asarray(row_imp, dtype=np.int64),
        row_click=np.asarray(row_click, dtype=np.float64),
        impression_query=np.asarray(imp_query, dtype=np.int64),
        num_ranks=num_ranks,
    )


def bootstrap_weights(obs: Observations, unit: str, rng: np.random.Generator) -> np.ndarray:
    """Impression multiplicities of one bootstrap resample.

    ``unit="impression"`` resamples impressions with replacement; ``unit="query"`` resamples
    whole queries (with all their impressions), which keeps within-query correlation and gives
    honest, wider intervals when a few queries dominate the log."""
    n = obs.num_impressions
    if unit == "impression":
        return np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
    if unit == "query":
        nq = len(obs.queries)
        per_query = np.bincount(rng.integers(0, nq, size=nq), minlength=nq).astype(np.float64)
        return per_query[obs.impression_query]
    raise ConfigError(f"bootstrap unit must be 'impression' or 'query', got {unit!r}")
