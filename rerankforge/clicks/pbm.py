"""Position-based click model (PBM) fitted by EM, with a shared relevance model.

PBM: a document d shown to query q at rank k is clicked iff it is examined and relevant,

    P(C = 1 | q, d, k) = theta_k * gamma_{q,d},

with examination (propensity) theta_k depending only on the rank. Wang, Golbandi, Bendersky,
Metzler and Najork, WSDM 2018, "Position Bias Estimation for Unbiased Learning to Rank in
Personal Search", estimate theta by EM, treating examination E and relevance R as latent:

E-step (for an unclicked row; a clicked one has E = R = 1)

    P(E=1, R=0 | C=0) = theta_k (1 - gamma) / (1 - theta_k gamma)
    P(E=0, R=1 | C=0) = (1 - theta_k) gamma / (1 - theta_k gamma)

M-step

    theta_k = sum_rows_at_k [c + (1 - c) P(E=1 | C=0)] / rows_at_k
    gamma   = the relevance model refitted to the posteriors

Standard EM gives every (query, doc) pair its own free gamma. With few impressions per pair
that is the incidental-parameter problem: each pair's gamma overfits its handful of clicks and
the propensity curve is biased (measured on the NFCorpus simulation — 50k impressions of the
BM25 top-10 over 2.6k train queries, 20% shuffled: ranks 9-10 come out 15-35% too high).
Wang et al.'s *regression*-EM answers the same sparsity by making the relevance M-step a model
shared across pairs (a regression on (q, d) features). A click log of ids carries no content
features, so the shared model here is a regression of the relevance *distribution* on the one
pair-level covariate every log has — the rank the pair is usually shown at:

* ``relevance="mixture"`` (default): gamma_{q,d} is latent, drawn from a discrete distribution
  ``pi_g`` on a fixed grid over (0, 1], one distribution per group g = the pair's most frequent
  displayed rank (``prior_by_rank``). The E-step computes each pair's posterior over the grid,
  the M-step refits each ``pi_g`` (nonparametric maximum-likelihood priors, Laird 1978) and
  theta. theta maximises the *marginal* likelihood with gamma integrated out, so it stays
  consistent with a bounded number of impressions per pair. Conditioning the prior on the usual
  rank is the correlated-random-effects remedy (Mundlak 1978; Chamberlain 1980): the logging
  ranker puts relevant pairs high, and a single prior for all pairs would read that correlation
  as position bias (measured: ranks 9-10 ~8% too low with one prior, unbiased with per-rank
  priors). A pair's relevance estimate is its posterior mean.
* ``relevance="pair"``: one free gamma per pair (closed-form M-step ``gamma = sum P(R=1) /
  views``; standard EM). Fine with many impressions per pair at several ranks (e.g. the Yandex
  sample: 20 queries, 35k impressions), biased otherwise.

EM for PBM crawls along a flat likelihood ridge; the iterations are accelerated with SQUAREM.

Position is never part of the relevance model: theta is identified only because the same
pair appears at different ranks (rankings that change across impressions, randomisation,
several rankers); :func:`identifiable_share` measures how much of the log does, and
:func:`fit_pbm` refuses a log where nothing does. Only ratios theta_k / theta_1 are identified
(theta and gamma trade a common scale), so propensities are reported normalised to rank 1 = 1.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from rerankforge.clicks.observations import Observations, bootstrap_weights
from rerankforge.errors import ConfigError

log = logging.getLogger(__name__)

_EPS = 1e-6
_PRIOR_FLOOR = 1e-10
RELEVANCE_MODELS = ("mixture", "pair")


@dataclass
class PBMResult:
    theta: np.ndarray  # raw examination probability per rank (0-based)
    gamma: np.ndarray  # relevance estimate per pair (aligned with Observations.pairs)
    iterations: int
    converged: bool
    log_likelihood: float
    relevance: str
    #: mixture prior: grid of relevance values and their probabilities
    grid: np.ndarray | None = None
    prior: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def propensity(self) -> np.ndarray:
        return self.theta / self.theta[0]

    def unseen_relevance(self, rank: int) -> float:
        """Relevance guess for a pair not in the fitted log, shown at 0-based ``rank``: the prior
        mean of pairs usually shown there (mixture with per-rank priors), else the mean of all."""
        if self.prior is not None:
            row = self.prior[min(rank, self.prior.shape[0] - 1)] if self.prior.shape[0] > 1 else self.prior[0]
            return float(row @ self.grid)
        return float(self.gamma.mean())


def identifiable_share(views: np.ndarray) -> float:
    """Share of click-log rows whose (query, doc) pair was shown at two or more ranks.

    Zero means theta and gamma are confounded: any propensity curve fits equally well."""
    multi = (views > 0).sum(1) >= 2
    return float(views[multi].sum() / max(views.sum(), 1e-12))


def _pair_ll(theta, gamma, views, clicks) -> float:
    p = np.clip(theta[None, :] * gamma[:, None], _EPS, 1 - _EPS)
    return float(np.sum(clicks * np.log(p) + (views - clicks) * np.log1p(-p)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _logsumexp_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = a.max(1, keepdims=True)
    e = np.exp(a - top)
    s = e.sum(1, keepdims=True)
    return e / s, (top + np.log(s)).ravel()


def _one_blas_thread():
    # The EM's tall-skinny matrix products gain nothing from BLAS threads, and on a shared
    # machine a busy OpenBLAS pool makes them ~10x slower.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def fit_pbm(obs: Observations, relevance: str = "mixture", **kwargs) -> PBMResult:
    """Fit PBM by EM on ``[pairs, ranks]`` counts (default: the whole log).

    Keyword arguments: ``views``/``clicks`` (``[pairs, ranks]``, e.g. a bootstrap resample),
    ``max_iter``, ``tol`` (stop when no normalised propensity moves more than this in one
    iteration), ``grid_size`` (mixture grid over (0, 1]), ``init`` (warm start), ``check``
    (refuse unidentifiable logs)."""
    with _one_blas_thread():
        return _fit_pbm(obs, relevance, **kwargs)


class _EM:
    """The EM map x -> F(x) on the flat parameter vector (theta, relevance parameters), which
    also returns the log-likelihood at x; SQUAREM extrapolates along successive maps."""

    def __init__(self, obs: Observations, relevance: str, views: np.ndarray, clicks: np.ndarray,
                 grid_size: int, prior_by_rank: bool, init: PBMResult | None):
        self.relevance = relevance
        self.views, self.clicks = views, clicks
        self.non = views - clicks
        self.rank_views = views.sum(0)
        self.pair_views = views.sum(1)
        self.has_rank = self.rank_views > 0
        self.has_pair = self.pair_views > 0
        self.pair_clicks = clicks.sum(1)
        # A clicked row contributes c * log(theta_k) whatever the relevance; constant per theta.
        self.rank_clicks = clicks.sum(0)
        self.k = obs.num_ranks
        theta = init.theta.copy() if init is not None else np.full(self.k, 0.5)  # flat: the data must make the decay
        if relevance == "pair":
            gamma = init.gamma.copy() if init is not None else np.clip(
                self.pair_clicks / np.maximum(self.pair_views, 1e-12) / 0.5, 0.05, 0.95)
            self.x0 = np.concatenate([theta, gamma])
            return
        self.grid = init.grid if init is not None and init.grid is not None else np.linspace(0, 1, grid_size + 1)[1:]
        self.log_grid = np.log(np.clip(self.grid, _EPS, 1 - _EPS))
        # One prior per "usual rank" of a pair (its most frequent displayed rank), or one for all.
        self.group = views.argmax(1) if prior_by_rank else np.zeros(len(views), dtype=np.int64)
        n_groups = self.k if prior_by_rank else 1
        if init is not None and init.prior is not None and init.prior.shape[0] == n_groups:
            prior = init.prior.copy()
        else:
            prior = np.full((n_groups, len(self.grid)), 1 / len(self.grid))
        self.in_group = np.zeros((n_groups, len(views)))
        self.in_group[self.group[self.has_pair], np.flatnonzero(self.has_pair)] = 1.0
        self.group_size = self.in_group.sum(1, keepdims=True)
        self.prior_shape = prior.shape
        self.x0 = np.concatenate([theta, prior.ravel()])

    def unpack(self, x):
        return x[: self.k], x[self.k:] if self.relevance == "pair" else x[self.k:].reshape(self.prior_shape)

    # SQUAREM extrapolates in an unconstrained space: logit(theta), logit(gamma) / log(prior),
    # so a long jump cannot leave (0, 1) or the simplex.
    def to_free(self, x):
        theta, rest = self.unpack(x)
        free = np.log(np.clip(rest, _PRIOR_FLOOR, None)) if self.relevance == "mixture" else _logit(rest)
        return np.concatenate([_logit(theta), free.ravel()])

    def from_free(self, y):
        theta = np.clip(1.0 / (1.0 + np.exp(-y[: self.k])), _EPS, 1 - _EPS)
        if self.relevance == "pair":
            rest = np.clip(1.0 / (1.0 + np.exp(-y[self.k:])), _EPS, 1 - _EPS)
        else:
            logp = y[self.k:].reshape(self.prior_shape)
            p = np.exp(logp - logp.max(1, keepdims=True))
            rest = (p / p.sum(1, keepdims=True)).ravel()
        return np.concatenate([theta, rest])

    def posterior(self, theta, prior):
        tg = np.clip(theta[:, None] * self.grid[None, :], _EPS, 1 - _EPS)  # [ranks, grid]
        ll = self.pair_clicks[:, None] * self.log_grid[None, :] + self.non @ np.log1p(-tg)
        post, marginal = _logsumexp_rows(ll + np.log(np.maximum(prior, 1e-300))[self.group])
        loglik = float(marginal[self.has_pair].sum() + self.rank_clicks @ np.log(np.clip(theta, _EPS, 1)))
        return post, tg, loglik

    def __call__(self, x) -> tuple[np.ndarray, float]:
        theta, rest = self.unpack(x)
        if self.relevance == "pair":
            g = rest[:, None]
            t = theta[None, :]
            denom = np.clip(1.0 - t * g, _EPS, None)
            exam = self.clicks + self.non * (t * (1.0 - g) / denom)
            rel = self.clicks + self.non * ((1.0 - t) * g / denom)
            loglik = _pair_ll(theta, rest, self.views, self.clicks)
            new_rest = np.where(self.has_pair, rel.sum(1) / np.maximum(self.pair_views, 1e-12), rest)
            new_rest = np.clip(new_rest, _EPS, 1 - _EPS)
        else:
            post, tg, loglik = self.posterior(theta, rest)
            new_rest = np.where(self.group_size > 0, (self.in_group @ post) / np.maximum(self.group_size, 1), rest)
            # Floor grid weights: ones that head to 0 would otherwise race to -inf in log space and
            # dominate SQUAREM's step length (the floor changes the fit by < 1e-9 per pair).
            new_rest = np.maximum(new_rest, _PRIOR_FLOOR)
            new_rest /= new_rest.sum(1, keepdims=True)
            p_exam = theta[:, None] * (1.0 - self.grid[None, :]) / (1.0 - tg)  # P(E=1 | C=0, gamma_j)
            exam = self.clicks + self.non * (post @ p_exam.T)
            new_rest = new_rest.ravel()
        new_theta = np.where(self.has_rank, exam.sum(0) / np.maximum(self.rank_views, 1e-12), theta)
        return np.concatenate([np.clip(new_theta, _EPS, 1 - _EPS), new_rest]), loglik

    def result(self, x, iterations: int, converged: bool) -> PBMResult:
        theta, rest = self.unpack(x)
        if self.relevance == "pair":
            return PBMResult(theta, rest, iterations, converged, _pair_ll(theta, rest, self.views, self.clicks),
                             "pair")
        post, _, loglik = self.posterior(theta, rest)
        return PBMResult(theta, post @ self.grid, iterations, converged, loglik, "mixture", self.grid, rest)


def _fit_pbm(obs: Observations, relevance: str = "mixture", *, views: np.ndarray | None = None,
             clicks: np.ndarray | None = None, max_iter: int = 5000, tol: float = 1e-5, grid_size: int = 50,
             prior_by_rank: bool = True, accelerate: bool = True, init: PBMResult | None = None,
             check: bool = True) -> PBMResult:
    if relevance not in RELEVANCE_MODELS:
        raise ConfigError(f"unknown PBM relevance model {relevance!r}; choose one of {', '.join(RELEVANCE_MODELS)}")
    if views is None or clicks is None:
        views, clicks = obs.aggregate()
    if check:
        share = identifiable_share(views)
        if share == 0.0:
            raise ConfigError(
                "position bias is not identifiable from this log: every (query, document) pair was always "
                "shown at the same rank, so any propensity curve explains the clicks equally well. PBM-EM needs "
                "rankings that vary across impressions (randomisation/interventions, several rankers, ranker changes)")
        if share < 0.05:
            log.warning("only %.1f%% of impressions show a document at a rank it also had elsewhere: "
                        "propensities are weakly identified", 100 * share)
    em = _EM(obs, relevance, views, clicks, grid_size, prior_by_rank, init)
    k = obs.num_ranks
    x = em.x0
    evaluations = 0
    step_max = 1.0
    converged = False
    while evaluations < max_iter:
        before = x[:k] / x[0]
        x1, ll0 = em(x)
        evaluations += 1
        if not accelerate:
            x = x1
        else:
            # SQUAREM (Varadhan and Roland, Scand. J. Statistics 2008, scheme S3): extrapolate along
            # two EM steps, fall back to the plain second step when the jump leaves the parameter
            # space or lowers the likelihood. EM for PBM crawls along a flat ridge; this cuts the
            # number of E-steps by an order of magnitude.
            x2, _ = em(x1)
            evaluations += 1
            y0, y1, y2 = em.to_free(x), em.to_free(x1), em.to_free(x2)
            r = y1 - y0
            v = y2 - y1 - r
            vv = float(v @ v)
            alpha = min(-np.sqrt(float(r @ r) / vv), -1.0) if vv > 0 else -1.0
            # Step bound as in the SQUAREM package: grows x4 while steps hit it, shrinks on a failure.
            alpha = max(alpha, -step_max)
            if alpha == -step_max:
                step_max *= 4.0
            if alpha < -1.0:
                xn, llj = em(em.from_free(y0 - 2 * alpha * r + alpha * alpha * v))
                evaluations += 1
                if np.isfinite(llj) and llj >= ll0:
                    x = xn
                else:
                    x = x2
                    step_max = max(1.0, step_max / 4.0)
            else:
                x = x2
        if np.max(np.abs(x[:k] / x[0] - before)) < tol:
            converged = True
            break
    if not converged:
        log.warning("PBM-EM stopped after %d EM steps without converging (tol %g)", evaluations, tol)
    return em.result(x, evaluations, converged)


@dataclass
class Bootstrap:
    samples: np.ndarray  # [B, ranks] normalised propensities
    low: np.ndarray
    high: np.ndarray
    confidence: float
    unit: str


def bootstrap_pbm(obs: Observations, full: PBMResult, samples: int = 100, unit: str = "query",
                  confidence: float = 0.95, seed: int = 0, **fit_kwargs) -> Bootstrap:
    """Percentile bootstrap interval of the normalised propensities; each resample is refitted
    from the full-data solution (warm start) so it costs a fraction of the first fit.

    ``unit="query"`` draws queries with replacement and keeps each drawn copy's pairs as
    *separate* pairs (a query drawn twice is two queries, not one with doubled counts — merging
    would make its pairs look better observed than they are); ``unit="impression"`` reweights
    impressions."""
    if samples < 2:
        raise ConfigError("a bootstrap needs at least 2 samples")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if unit not in ("query", "impression"):
        raise ConfigError(f"bootstrap unit must be 'impression' or 'query', got {unit!r}")
    rng = np.random.default_rng(seed)
    views, clicks = obs.aggregate()
    order = np.argsort(obs.pair_query, kind="stable")
    bounds = np.searchsorted(obs.pair_query[order], np.arange(len(obs.queries) + 1))
    by_query = [order[bounds[q]: bounds[q + 1]] for q in range(len(obs.queries))]
    out = np.empty((samples, obs.num_ranks))
    with _one_blas_thread():
        for b in range(samples):
            if unit == "query":
                rows = np.concatenate([by_query[q] for q in rng.integers(0, len(obs.queries), len(obs.queries))])
                v, c = views[rows], clicks[rows]
                init = full if full.relevance == "mixture" else PBMResult(
                    full.theta, full.gamma[rows], 0, True, 0.0, full.relevance)
            else:
                v, c = obs.aggregate(bootstrap_weights(obs, unit, rng))
                init = full
            res = _fit_pbm(obs, full.relevance, views=v, clicks=c, init=init, check=False, **fit_kwargs)
            out[b] = res.propensity
    alpha = (1.0 - confidence) / 2
    return Bootstrap(out, np.quantile(out, alpha, axis=0), np.quantile(out, 1 - alpha, axis=0), confidence, unit)


def predict_clicks(result: PBMResult, obs: Observations, query_ids, shown_lists) -> list[np.ndarray]:
    """Marginal P(click) per rank for (possibly new) impressions. Pairs not in the fitted log get
    the prior mean relevance at their rank (mixture) or the mean of their query's pairs (pair).
    Ranks deeper than the fitted curve reuse its last propensity."""
    pair_index = {p: i for i, p in enumerate(obs.pairs)}
    q_index = {q: i for i, q in enumerate(obs.queries)}
    counts = np.bincount(obs.pair_query, minlength=len(obs.queries))
    q_mean = np.bincount(obs.pair_query, weights=result.gamma, minlength=len(obs.queries)) / np.maximum(counts, 1)
    out = []
    for qid, shown in zip(query_ids, shown_lists):
        probs = np.empty(len(shown))
        for r, doc in enumerate(shown):
            pi = pair_index.get((qid, doc))
            if pi is not None:
                g = result.gamma[pi]
            elif result.relevance == "pair" and qid in q_index:
                g = q_mean[q_index[qid]]
            else:
                g = result.unseen_relevance(r)
            probs[r] = result.theta[min(r, len(result.theta) - 1)] * g
        out.append(np.clip(probs, _EPS, 1 - _EPS))
    return out
