"""Unbiased learning to rank from clicks: click models (PBM by regression-EM, cascade), a click
simulator, click-derived training groups (naive, IPW, skip-above) and the NFCorpus experiment."""

from rerankforge.clicks.cascade import CascadeResult, fit_cascade
from rerankforge.clicks.labels import LabelConfig, click_groups
from rerankforge.clicks.observations import Observations, build_observations
from rerankforge.clicks.pbm import PBMResult, bootstrap_pbm, fit_pbm
from rerankforge.clicks.propensity import Propensities, load_propensities
from rerankforge.clicks.simulate import SimulationConfig, simulate_clicks, true_propensities

__all__ = [
    "CascadeResult",
    "LabelConfig",
    "Observations",
    "PBMResult",
    "Propensities",
    "SimulationConfig",
    "bootstrap_pbm",
    "build_observations",
    "click_groups",
    "fit_cascade",
    "fit_pbm",
    "load_propensities",
    "simulate_clicks",
    "true_propensities",
]
