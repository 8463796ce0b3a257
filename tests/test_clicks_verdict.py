"""`clicks estimate`'s verdict: is position-bias correction worth it on a log like this one?"""

import json

import numpy as np

from rerankforge.clicks.observations import build_observations
from rerankforge.clicks.verdict import VerdictConfig, correction_verdict
from rerankforge.data.clicks import Impression


def _log(theta, n_queries=120, impressions=60, shuffle=0.25, seed=0):
    """Impressions of a logger that shows the least relevant documents first (a reshuffled list
    now and then, so the curve is identifiable), clicks drawn from PBM with ``theta``."""
    rng = np.random.default_rng(seed)
    imps, gamma = [], {}
    for q in range(n_queries):
        docs = [f"q{q}d{i}" for i in range(10)]
        rel = rng.choice([0.02, 0.3, 0.9], size=10, p=[0.6, 0.25, 0.15])
        gamma.update({(f"q{q}", d): r for d, r in zip(docs, rel)})
        base = [docs[i] for i in np.argsort(rel)]
        for _ in range(impressions):
            shown = list(rng.permutation(base)) if rng.random() < shuffle else base
            clicks = [d for r, d in enumerate(shown) if rng.random() < theta[r] * gamma[f"q{q}", d]]
            imps.append(Impression(f"q{q}", shown, clicks))
    obs = build_observations(imps)
    return imps, obs, np.array([gamma[p] for p in obs.pairs])


def test_severe_bias_against_relevance_makes_correction_worth_it():
    theta = (1.0 / np.arange(1, 11)) ** 2
    _, obs, gamma = _log(theta)
    v = correction_verdict(obs, theta, gamma, VerdictConfig(simulations=2, bootstrap=200))
    assert v["worth_it"] == "yes", v["verdict"]
    # Weights up to 1/theta_10 = 100 make IPW noisy; the learned bias does not pay that variance.
    assert v["gain_vs_naive"]["ipw"]["gain"] > 0 and v["gain_vs_naive"]["two_tower"]["low"] > 0.02
    assert v["nDCG@10"]["ipw"] > v["nDCG@10"]["naive"]


def test_no_position_bias_means_no_gain():
    theta = np.ones(10)
    _, obs, gamma = _log(theta, n_queries=60)
    v = correction_verdict(obs, theta, gamma, VerdictConfig(simulations=2, bootstrap=200))
    # With a flat curve IPW weights are all 1: the same scores as naive, so exactly no gain.
    assert v["gain_vs_naive"]["ipw"] == {"gain": 0.0, "low": 0.0, "high": 0.0}
    assert v["worth_it"] == "no", v["verdict"]


def test_estimate_writes_the_verdict_beside_the_curve(tmp_path):
    from rerankforge.clicks.tasks import EstimateConfig, estimate

    imps, _, _ = _log((1.0 / np.arange(1, 11)) ** 2, n_queries=40, impressions=30)
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"query_id": i.query_id, "shown": i.shown, "clicks": i.clicks}) + "\n"
                            for i in imps))
    estimate(EstimateConfig(log=[str(path)], out=str(tmp_path / "p.json"), bootstrap=0, verdict_simulations=2))
    saved = json.loads((tmp_path / "p.json").read_text())
    meta = saved.get("meta", saved)
    c = meta["correction"]
    assert c["worth_it"] in {"yes", "no", "unclear"} and c["verdict"].startswith(("worth it", "not worth", "unclear"))
    assert set(c["gain_vs_naive"]) == {"ipw", "two_tower"} and c["simulations"] == 2
