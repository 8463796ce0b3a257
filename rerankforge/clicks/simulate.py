"""Simulated click logs from real relevance judgments and a real first-stage ranking.

Each impression picks a query uniformly at random (with replacement) among those that have
judgments and a ranking, shows its top-k, and draws clicks from a position-based model:

    P(examine rank r)          = (1 / r) ** eta                       (severity eta; eta = 0: no bias)
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

Everything is drawn from one ``numpy`` generator seeded by ``seed``: the same inputs and config
give the same log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rerankforge.data.clicks import Impression
from rerankforge.data.trec import Run
from rerankforge.config import option
from rerankforge.errors import ConfigError

PERTURBATIONS = ("none", "shuffle", "swap")


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
    theta = np.array(true_propensities(k, cfg.eta))

    rng = np.random.default_rng(cfg.seed)
    n = cfg.impressions
    q_of = rng.integers(0, len(qids), size=n)
    length = lengths[q_of]
    positions = np.arange(k)[None, :]
    valid = positions < length[:, None]
    perm = np.broadcast_to(positions, (n, k)).copy()
    perturbed = rng.random(n) < cfg.perturb_prob if cfg.perturb != "none" else np.zeros(n, dtype=bool)
    if cfg.perturb == "shuffle":
        # Random keys sorted within the real positions; padding keys (inf) stay at the end.
        keys = np.where(valid, rng.random((n, k)), np.inf)
        perm[perturbed] = np.argsort(keys[perturbed], axis=1, kind="stable")
    elif cfg.perturb == "swap":
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
