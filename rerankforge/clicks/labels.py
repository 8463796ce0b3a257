"""Training groups from clicks: naive, inverse-propensity weighted (IPW) and skip-above pairs.

Aggregated groups (``structure="aggregate"``): one group per query; candidates are the union of
the documents shown in its impressions. For a document d shown n_d times, at ranks k_i, with
click indicators c_i (after the optional dwell threshold):

    naive:  rate_d = (1/n_d) sum_i c_i
    ipw:    rate_d = (1/n_d) sum_i c_i * min(1/theta_{k_i}, max_weight)

Why this is the unbiased form. Under PBM, E[c_i] = theta_{k_i} gamma_d, so E[c_i / theta_{k_i}] =
gamma_d for *every* impression that showed d, wherever it was shown: the IPW rate is an
unbiased estimate of gamma_d = P(click | examined), the relevance signal (Joachims, Swaminathan
and Schnabel, WSDM 2017). The naive rate estimates (mean theta over d's ranks) * gamma_d and so
rewards whatever the logging ranker put on top. Averaging over the impressions that *showed* d
(not summing over the query's impressions) keeps how often d was shown out of the label — a sum
would be a second exposure bias. Caveats: clipping at ``max_weight`` trades a small bias
(under-weighting deep clicks) for bounded variance; a listwise loss normalises targets within
the group, so it sees a ratio of unbiased estimates (consistent, bias O(1/n)); with estimated
propensities the estimate is only as good as the click model. Per-impression groups would be
unbiased term by term but normalise each impression's handful of clicks on its own and cost
one group per impression.

How the rate reaches the losses (``label_mode``):

* ``indicator`` (default): ``label = 1`` for documents clicked at least once (``0`` otherwise)
  and ``weight = rate_d`` for them (``1`` for the others). Listwise losses multiply the gain of
  label 1 (which is 1) by the weight, so targets are proportional to rate_d — exactly the
  aggregated IPW softmax cross-entropy; weighted pointwise losses scale the positive term by it.
* ``rate``: ``label = min(rate_d, 1)`` and ``weight = 1``: a soft target for pointwise losses
  (BCE is linear in the target, so the expectation is preserved up to the clip at 1).

Every candidate also carries ``propensity`` — the harmonic mean of theta over the ranks it was
shown at, i.e. ``1/propensity`` is its mean inverse propensity — and ``rank``, its most frequent
displayed rank.

Skip-above pairs (``structure="skip_above"``, Joachims, KDD 2002, "Optimizing search engines
using clickthrough data"): a clicked document is preferred to every unclicked document shown
above it. One group per (query, clicked document) holds that document (label 1) and all the
documents it was preferred to (label 0). Weights count the observations: the positive's weight
is the number of impressions in which it was clicked below a skipped document, a negative's the
number of impressions supporting that pair; with ``method="ipw"`` each impression counts
min(1/theta_k, max_weight) of the *clicked* rank (Joachims et al. 2017, Propensity SVM-Rank).
With one positive per group a listwise loss ignores the positive's weight; use a loss that
weights per-candidate terms to make the pair weights matter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from rerankforge.clicks.propensity import Propensities
from rerankforge.data.clicks import Impression
from rerankforge.data.groups import Candidate, Group
from rerankforge.errors import ConfigError

METHODS = ("naive", "ipw")
STRUCTURES = ("aggregate", "skip_above")
LABEL_MODES = ("indicator", "rate")


@dataclass
class LabelConfig:
    method: str = "ipw"
    structure: str = "aggregate"
    label_mode: str = "indicator"
    #: cap on 1/propensity per click
    max_weight: float = 20.0
    #: clicks shorter than this many seconds count as no click (null: every click counts)
    min_dwell: Optional[float] = None
    #: keep query groups without any click (all-zero labels; listwise losses skip them)
    keep_unclicked: bool = False
    with_text: bool = True
    #: ignore ranks deeper than this (null: all shown ranks)
    max_rank: Optional[int] = None
    #: also store per-rank ``views`` / ``clicks`` on every candidate (aggregate structure): what the
    #: learned-bias losses (two_tower, dla, trust_bias) fit
    with_counts: bool = False

    def validate(self) -> None:
        for name, value, allowed in (("method", self.method, METHODS), ("structure", self.structure, STRUCTURES),
                                     ("label_mode", self.label_mode, LABEL_MODES)):
            if value not in allowed:
                raise ConfigError(f"labels.{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not self.max_weight >= 1.0:
            raise ConfigError(f"labels.max_weight must be >= 1 (a propensity is at most 1), got {self.max_weight}")
        if self.with_counts and self.structure != "aggregate":
            raise ConfigError("labels.with_counts needs structure 'aggregate' (counts per query group)")


@dataclass
class LabelStats:
    queries: int = 0
    groups: int = 0
    candidates: int = 0
    positives: int = 0
    clicks: int = 0
    clipped_clicks: int = 0
    clipped_labels: int = 0
    dropped: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"queries": self.queries, "groups": self.groups, "candidates": self.candidates,
                "positives": self.positives, "clicks": self.clicks, "clipped_clicks": self.clipped_clicks,
                "clipped_labels": self.clipped_labels, "dropped": dict(self.dropped)}


class _Weigher:
    def __init__(self, cfg: LabelConfig, propensities: Propensities | None):
        self.cfg = cfg
        self.prop = propensities
        self.clipped = 0

    def inverse(self, rank: int) -> float:
        """Weight of a click at ``rank`` (1-based): 1 (naive) or min(1/theta, max_weight)."""
        if self.cfg.method == "naive":
            return 1.0
        w = 1.0 / self.prop.at(rank)
        if w > self.cfg.max_weight:
            self.clipped += 1
            return self.cfg.max_weight
        return w


def _query_text(qid: str, imps: Sequence[Impression], queries: Mapping[str, str] | None) -> str:
    for imp in imps:
        if imp.query:
            return imp.query
    if queries is not None and qid in queries:
        return queries[qid]
    raise ConfigError(f"query {qid!r} (first seen at {imps[0].source or '?'}) has no text: add \"query\" to the "
                      "log records or give a collection whose queries.jsonl has this id")


def _text(doc: str, corpus, with_text: bool) -> str | None:
    if not with_text:
        return None
    if corpus is None:
        raise ConfigError("document texts requested but no corpus given (or write groups without text)")
    return corpus.text(doc)


def click_groups(impressions: Sequence[Impression], cfg: LabelConfig, propensities: Propensities | None = None,
                 queries: Mapping[str, str] | None = None, corpus=None) -> tuple[list[Group], LabelStats]:
    """Training groups from a click log, in order of first appearance of each query."""
    cfg.validate()
    if cfg.method == "ipw" and propensities is None:
        raise ConfigError("method 'ipw' needs propensities (run `rerankforge clicks estimate` first)")
    by_query: dict[str, list[Impression]] = {}
    for imp in impressions:
        by_query.setdefault(imp.query_id, []).append(imp)
    stats = LabelStats(queries=len(by_query))
    weigher = _Weigher(cfg, propensities)
    build = _aggregate if cfg.structure == "aggregate" else _skip_above
    groups: list[Group] = []
    for qid, imps in by_query.items():
        groups.extend(build(qid, imps, cfg, weigher, propensities, queries, corpus, stats))
    stats.groups = len(groups)
    stats.candidates = sum(len(g.candidates) for g in groups)
    stats.positives = sum(len(g.positives) for g in groups)
    stats.clipped_clicks = weigher.clipped
    return groups, stats


def _shown(imp: Impression, cfg: LabelConfig) -> list[str]:
    return imp.shown if cfg.max_rank is None else imp.shown[: cfg.max_rank]


def _aggregate(qid, imps, cfg, weigher, propensities, queries, corpus, stats) -> list[Group]:
    order: dict[str, None] = {}
    shown_n: Counter = Counter()
    ranks: dict[str, Counter] = {}
    inv_prop_sum: Counter = Counter()
    click_n: Counter = Counter()
    click_w: Counter = Counter()
    rank_clicks: dict[str, Counter] = {}
    for imp in imps:
        clicked = imp.clicked(cfg.min_dwell)
        for r, d in enumerate(_shown(imp, cfg), start=1):
            order.setdefault(d, None)
            shown_n[d] += 1
            if cfg.with_counts and d in clicked:
                rank_clicks.setdefault(d, Counter())[r] += 1
            ranks.setdefault(d, Counter())[r] += 1
            if propensities is not None:
                inv_prop_sum[d] += 1.0 / propensities.at(r)
            if d in clicked:
                click_n[d] += 1
                click_w[d] += weigher.inverse(r)
    stats.clicks += sum(click_n.values())
    if not click_n and not cfg.keep_unclicked:
        stats.dropped["no_clicks"] += 1
        return []
    text = _query_text(qid, imps, queries)
    depth = max(r for rs in ranks.values() for r in rs)
    cands = []
    for d in order:
        n = shown_n[d]
        rate = click_w[d] / n
        if cfg.label_mode == "indicator":
            label, weight = (1.0, rate) if click_n[d] else (0.0, 1.0)
        else:
            label, weight = min(rate, 1.0), 1.0
            stats.clipped_labels += rate > 1.0
        modal = min(ranks[d].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        counts = {}
        if cfg.with_counts:
            clicked_at = rank_clicks.get(d, Counter())
            counts = {"views": [float(ranks[d][r]) for r in range(1, depth + 1)],
                      "clicks": [float(clicked_at[r]) for r in range(1, depth + 1)]}
        cands.append(Candidate(d, _text(d, corpus, cfg.with_text), label, rank=modal,
                               propensity=(n / inv_prop_sum[d]) if propensities is not None else None,
                               weight=weight, **counts))
    meta = {"source": "clicks", "method": cfg.method, "label_mode": cfg.label_mode, "impressions": len(imps),
            "clicks": int(sum(click_n.values()))}
    return [Group(qid, text, cands, meta)]


def _skip_above(qid, imps, cfg, weigher, propensities, queries, corpus, stats) -> list[Group]:
    pos_w: dict[str, float] = {}
    pos_n: Counter = Counter()
    neg_w: dict[str, dict[str, float]] = {}
    ranks: dict[str, Counter] = {}
    for imp in imps:
        clicked = imp.clicked(cfg.min_dwell)
        shown = _shown(imp, cfg)
        for r, d in enumerate(shown, start=1):
            ranks.setdefault(d, Counter())[r] += 1
        for j, d in enumerate(shown, start=1):
            if d not in clicked:
                continue
            stats.clicks += 1
            skipped = [u for u in shown[: j - 1] if u not in clicked]
            if not skipped:
                continue
            w = weigher.inverse(j)
            pos_w[d] = pos_w.get(d, 0.0) + w
            pos_n[d] += 1
            negs = neg_w.setdefault(d, {})
            for u in skipped:
                negs[u] = negs.get(u, 0.0) + w
    if not pos_w:
        stats.dropped["no_skip_above_pairs"] += 1
        return []
    text = _query_text(qid, imps, queries)

    def cand(d: str, label: float, weight: float) -> Candidate:
        modal = min(ranks[d].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        return Candidate(d, _text(d, corpus, cfg.with_text), label, rank=modal,
                         propensity=propensities.at(modal) if propensities is not None else None, weight=weight)

    groups = []
    for d, w in pos_w.items():
        cands = [cand(d, 1.0, w)] + [cand(u, 0.0, wu) for u, wu in neg_w[d].items()]
        meta = {"source": "clicks", "method": cfg.method, "structure": "skip_above", "impressions": pos_n[d]}
        groups.append(Group(qid, text, cands, meta))
    return groups
