"""Simulated click logs from real relevance judgments and a real first-stage ranking.

Each impression picks a query uniformly at random (with replacement) among those that have
judgments and a ranking, shows its top-k, and draws clicks from a position-based model:

    P(examine rank r)          = (1 / r) ** eta                       (severity eta, any value >= 0; 0: no bias)
                                 or the curve of a propensity file     (``propensity_file``, e.g. the
                                 one ``clicks estimate`` wrote for a real log)
    P(click | examined, rel)   = eps_neg + (eps_pos - eps_neg) * (2**rel - 1) / (2**max_rel - 1)

``relevance="graded"`` (above) spreads the click probability over the grades with the nDCG gain;
with eps_pos = 1 it is the common eps_neg + (1 - eps_neg) * gain form (Chapelle et al. 2009 /
Ai et al. 2018 style). ``relevance="binary"`` uses eps_pos for any grade > 0 and eps_neg for the
rest. Unjudged documents are non-relevant. ``max_rel`` is the largest grade in the qrels.

Rankings that never change make position bias unidentifiable from clicks (a document's relevance
and its rank's propensity are confounded), so a share ``perturb_prob`` of impressions may be
*interventions* on the logged ranking:

* ``shuffle`` — the top-k in uniformly random order (RandTop-k);
* ``swap``    — rank 1 swapped with a uniformly random other rank (RandPair; both from Joachims,
  Swaminathan and Schnabel, WSDM 2017);
* ``none``    — always the first-stage order.

What is shown comes from a *logging ranker* (``logger``):

* ``bm25``        — the first-stage order;
* ``degraded``    — the first stage's top ``logger_pool`` re-sorted by score + Gaussian noise of
  ``logger_noise`` times the query's score standard deviation over that pool (a fixed, worse ranker:
  the noise is drawn once per (query, document) from ``logger_seed``, so a held-out log drawn with
  another ``seed`` comes from the same ranker);
* ``random_topk`` — the first stage's top-k in a fresh uniformly random order in every impression
  (a fully randomised logging policy; ``perturb`` is then moot).

Everything else is drawn from one ``numpy`` generator seeded by ``seed``: the same inputs and config
give the same log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np

from rerankforge.data.clicks import Impression
from rerankforge.data.trec import Run
from rerankforge.config import option
from rerankforge.errors import ConfigError

PERTURBATIONS = ("none", "shuffle", "swap")
LOGGERS = ("bm25", "degraded", "random_topk")


@dataclass
class SimulationConfig:
    impressions: int = option(50_000, flag="--impressions", help="impressions simulated")
    top_k: int = option(10, flag="--top-k", help="documents shown per impression")
    eta: float = option(1.0, flag="--eta", help="position-bias severity: P(examine r) = (1/r)^eta")
    eps_pos: float = option(1.0, flag="--eps-pos", help="click probability of an examined top-grade document")
    eps_neg: float = option(0.1, flag="--eps-neg", help="click probability of an examined non-relevant document")
    relevance: str = option("graded", flag="--relevance", choices=("graded", "binary"), help="judgments as graded or binary")
    perturb: str = option("shuffle", flag="--perturb", choices=("none", "shuffle", "swap"),
                          help="interventions that make position bias identifiable")
    perturb_prob: float = option(0.2, flag="--perturb-prob", help="share of impressions perturbed")
    seed: int = option(0, flag="--seed", help="simulation seed")
    propensity_file: Optional[str] = option(None, flag="--propensity-file",
                                            help="examination curve from a propensities JSON (replaces eta)")
    logger: str = option("bm25", flag="--logger", choices=LOGGERS, help="logging ranker that orders what is shown")
    logger_noise: float = option(1.0, flag="--logger-noise",
                                 help="degraded logger: noise sd in units of the query's score sd")
    logger_pool: int = option(100, flag="--logger-pool", help="degraded logger: re-sorts the first-stage top N")
    logger_seed: int = option(0, flag="--logger-seed", help="degraded logger: seed of its (fixed) noise")

    def validate(self) -> None:
        if self.impressions < 1 or self.top_k < 1:
            raise ConfigError("simulation.impressions and simulation.top_k must be positive")
        if self.eta < 0:
            raise ConfigError(f"simulation.eta must be >= 0, got {self.eta}")
        if not 0.0 <= self.eps_neg <= self.eps_pos <= 1.0:
            raise ConfigError(f"need 0 <= eps_neg <= eps_pos <= 1, got eps_neg={self.eps_neg}, eps_pos={self.eps_pos}")
        if self.relevance not in ("graded", "binary"):
            raise ConfigError(f"simulation.relevance must be 'graded' or 'binary', got {self.relevance!r}")
        if self.perturb not in PERTURBATIONS:
            raise ConfigError(f"simulation.perturb must be one of {', '.join(PERTURBATIONS)}, got {self.perturb!r}")
        if not 0.0 <= self.perturb_prob <= 1.0:
            raise ConfigError(f"simulation.perturb_prob must be in [0, 1], got {self.perturb_prob}")
        if self.logger not in LOGGERS:
            raise ConfigError(f"simulation.logger must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        if self.logger_noise < 0:
            raise ConfigError(f"simulation.logger_noise must be >= 0, got {self.logger_noise}")
        if self.logger_pool < self.top_k:
            raise ConfigError(f"simulation.logger_pool ({self.logger_pool}) must be >= top_k ({self.top_k})")


def retrieval_depth(cfg: SimulationConfig) -> int:
    """How deep the first stage must go for the logging ranker."""
    return max(cfg.top_k, cfg.logger_pool) if cfg.logger == "degraded" else cfg.top_k


def examination_curve(cfg: SimulationConfig) -> list[float]:
    """P(examine rank r), r = 1..top_k: (1/r)^eta, or the propensity file's curve (which must reach top_k)."""
    if not cfg.propensity_file:
        return true_propensities(cfg.top_k, cfg.eta)
    from rerankforge.clicks.propensity import load_propensities

    curve = load_propensities(cfg.propensity_file)
    if len(curve) < cfg.top_k:
        raise ConfigError(f"simulation.propensity_file {cfg.propensity_file} covers ranks 1-{len(curve)}, but "
                          f"top_k is {cfg.top_k}: lower top_k or estimate on deeper impressions")
    values = [min(1.0, v / curve.values[0]) for v in curve.values[: cfg.top_k]]
    return values


def logging_run(run: Run, cfg: SimulationConfig) -> Run:
    """The logging ranker's top-k per query (see the module docstring)."""
    if cfg.logger != "degraded":
        return {q: list(docs[: cfg.top_k]) for q, docs in run.items()}
    out: Run = {}
    for q in sorted(run):
        pool = list(run[q][: cfg.logger_pool])
        if not pool:
            continue
        scores = np.array([float(s) for _, s in pool])
        sd = float(scores.std()) or 1.0
        # one generator per query, keyed by (logger_seed, query id): independent of which queries are simulated
        rng = np.random.default_rng([cfg.logger_seed, int(hashlib.sha256(q.encode()).hexdigest()[:15], 16)])
        noisy = scores + rng.normal(0.0, cfg.logger_noise * sd, size=len(pool))
        order = np.argsort(-noisy, kind="stable")[: cfg.top_k]
        out[q] = [(pool[i][0], float(noisy[i])) for i in order]
    return out

def true_propensities(top_k: int, eta: float) -> list[float]:
    """(1/r)^eta for r = 1..k (rank 1 = 1)."""
    return [float((1.0 / r) ** eta) for r in range(1, top_k + 1)]


def click_probability(grade: float, max_grade: float, cfg: SimulationConfig) -> float:
    if grade <= 0:
        return cfg.eps_neg
    if cfg.relevance == "binary" or max_grade <= 0:
        return cfg.eps_pos
    gain = (2.0 ** min(grade, max_grade) - 1.0) / (2.0 ** max_grade - 1.0)
    return cfg.eps_neg + (cfg.eps_pos - cfg.eps_neg) * gain


def simulate_clicks(run: Run, qrels: Mapping[str, Mapping[str, int]], cfg: SimulationConfig,
                    queries: Mapping[str, str] | None = None) -> list[Impression]:
    """Sample ``cfg.impressions`` impressions of the top-k of ``run`` for queries judged in ``qrels``."""
    cfg.validate()
    run = logging_run(run, cfg)
    qids = sorted(q for q in qrels if run.get(q))
    if not qids:
        raise ConfigError("no query has both judgments and a first-stage ranking to simulate on")
    k = cfg.top_k
    max_grade = max((g for judged in qrels.values() for g in judged.values()), default=0)
    docs = [[d for d, _ in run[q][:k]] for q in qids]
    lengths = np.array([len(d) for d in docs])
    prob = np.zeros((len(qids), k))
    for i, q in enumerate(qids):
        for r, d in enumerate(docs[i]):
            prob[i, r] = click_probability(qrels[q].get(d, 0), max_grade, cfg)
    theta = np.array(examination_curve(cfg))

    rng = np.random.default_rng(cfg.seed)
    n = cfg.impressions
    q_of = rng.integers(0, len(qids), size=n)
    length = lengths[q_of]
    positions = np.arange(k)[None, :]
    valid = positions < length[:, None]
    perm = np.broadcast_to(positions, (n, k)).copy()
    perturbed = rng.random(n) < cfg.perturb_prob if cfg.perturb != "none" else np.zeros(n, dtype=bool)
    perturb = cfg.perturb
    if cfg.logger == "random_topk":
        perturb, perturbed = "shuffle", np.ones(n, dtype=bool)
    if perturb == "shuffle":
        # Random keys sorted within the real positions; padding keys (inf) stay at the end.
        keys = np.where(valid, rng.random((n, k)), np.inf)
        perm[perturbed] = np.argsort(keys[perturbed], axis=1, kind="stable")
    elif perturb == "swap":
        rows = np.flatnonzero(perturbed & (length > 1))
        other = 1 + (rng.random(len(rows)) * (length[rows] - 1)).astype(np.int64)
        perm[rows, 0] = other
        perm[rows, other] = 0
    examined = rng.random((n, k)) < theta[None, :]
    attractive = rng.random((n, k)) < prob[q_of[:, None], perm]
    clicks = examined & attractive & valid

    out = []
    for i in range(n):
        qi = q_of[i]
        shown = [docs[qi][j] for j in perm[i, : length[i]]]
        clicked = [shown[r] for r in np.flatnonzero(clicks[i, : length[i]])]
        qid = qids[qi]
        out.append(Impression(qid, shown, clicked, query=None if queries is None else queries.get(qid),
                              session=f"sim-{i}"))
    return out
