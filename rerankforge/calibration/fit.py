"""Probability calibration of reranker scores: Platt and temperature scaling, ECE / Brier / log-loss,
reliability diagrams, folding the calibration into a cross-encoder's head, probability thresholds.

A reranker's score ``s`` is read as a logit: ``p = sigmoid(a·s + b)``.

* Platt scaling (Platt, 1999): fit ``a`` and ``b`` by maximum likelihood (logistic regression on
  the single feature ``s``).
* Temperature scaling (Guo et al., ICML 2017): ``p = sigmoid(s / T)``, i.e. ``a = 1/T, b = 0``;
  it rescales confidence without moving the 0.5 decision point.

Both are fitted on held-out labelled pairs: each judged query's top-``depth`` candidates of a
first-stage run, graded qrels binarised at ``grade >= rel_threshold``, unjudged = non-relevant.
ECE here is the binary (positive-class) calibration error with equal-width bins on [0, 1]:
``ECE = Σ_b (n_b / N) · |mean(y in b) − mean(p in b)|``; bin ``b`` holds ``b/B <= p < (b+1)/B``
(the last bin also holds ``p = 1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError

METHODS = ("platt", "temperature")


# --- metrics ---------------------------------------------------------------------------------

def _check(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if probs.shape != labels.shape:
        raise ValueError(f"{probs.size} probabilities but {labels.size} labels")
    if probs.size == 0:
        raise ValueError("no (probability, label) pairs")
    return probs, labels


def reliability_bins(probs, labels, n_bins: int = 15) -> list[dict[str, float]]:
    """Per equal-width bin: edges, count, mean predicted probability, observed positive rate."""
    probs, labels = _check(probs, labels)
    idx = np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        out.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": n,
                    "confidence": float(probs[sel].mean()) if n else float("nan"),
                    "accuracy": float(labels[sel].mean()) if n else float("nan")})
    return out


def expected_calibration_error(probs, labels, n_bins: int = 15) -> float:
    probs, labels = _check(probs, labels)
    total = 0.0
    for b in reliability_bins(probs, labels, n_bins):
        if b["count"]:
            total += b["count"] * abs(b["accuracy"] - b["confidence"])
    return total / probs.size


def brier_score(probs, labels) -> float:
    probs, labels = _check(probs, labels)
    return float(np.mean((probs - labels) ** 2))


def log_loss(probs, labels, eps: float = 1e-12) -> float:
    probs, labels = _check(probs, labels)
    p = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log1p(-p)))


def log_loss_from_logits(logits, labels) -> float:
    """Same as ``log_loss(sigmoid(z), y)`` but exact for large |z| (no clipping)."""
    z, y = _check(logits, labels)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def calibration_metrics(logits, labels, n_bins: int = 15) -> dict[str, float]:
    """ECE, Brier and log-loss of ``sigmoid(logits)`` against binary labels."""
    probs = expit(np.asarray(logits, dtype=np.float64))
    return {"ECE": expected_calibration_error(probs, labels, n_bins), "Brier": brier_score(probs, labels),
            "log_loss": log_loss_from_logits(logits, labels)}


# --- fitting ---------------------------------------------------------------------------------

@dataclass
class Calibration:
    """``p = sigmoid(a·s + b)``."""

    method: str
    a: float
    b: float

    def logits(self, scores) -> np.ndarray:
        return self.a * np.asarray(scores, dtype=np.float64) + self.b

    def probs(self, scores) -> np.ndarray:
        return expit(self.logits(scores))

    @property
    def temperature(self) -> float | None:
        return 1.0 / self.a if self.method == "temperature" else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.method == "temperature":
            d["temperature"] = self.temperature
        return d


def _nll_grad(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of logits ``z`` and its gradient w.r.t. ``z``."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z)), (expit(z) - y) / z.size


def _labels_ok(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s, y = _check(scores, labels)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if y.min() == y.max():
        raise ConfigError(f"cannot fit a calibration: all {y.size} labelled pairs are "
                          f"{'relevant' if y[0] else 'non-relevant'} (need both classes; check the split, "
                          "the run depth and the relevance threshold)")
    return s, y


def fit_platt(scores, labels) -> Calibration:
    """Maximum-likelihood ``(a, b)``; fitted on standardised scores for conditioning, then mapped back."""
    s, y = _labels_ok(scores, labels)
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    x = (s - mu) / sd

    def f(theta):
        loss, g = _nll_grad(theta[0] * x + theta[1], y)
        return loss, np.array([g @ x, g.sum()])

    prior = np.log(y.mean() / (1 - y.mean()))
    res = minimize(f, np.array([1.0, prior]), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 1000})
    a_std, b_std = res.x
    return Calibration("platt", float(a_std / sd), float(b_std - a_std * mu / sd))


def fit_temperature(scores, labels) -> Calibration:
    """Maximum-likelihood ``T > 0`` (optimised as log T); ``a = 1/T``, ``b = 0``."""
    s, y = _labels_ok(scores, labels)

    def f(theta):
        a = np.exp(-theta[0])
        loss, g = _nll_grad(a * s, y)
        return loss, np.array([-(g @ s) * a])

    res = minimize(f, np.zeros(1), jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 1000})
    return Calibration("temperature", float(np.exp(-res.x[0])), 0.0)


def fit_calibration(scores, labels, method: str = "platt") -> Calibration:
    if method == "platt":
        return fit_platt(scores, labels)
    if method == "temperature":
        return fit_temperature(scores, labels)
    raise ConfigError(f"unknown calibration method {method!r} ({', '.join(METHODS)})")


# --- labelled pairs from a run ---------------------------------------------------------------

def binarize(qrels: Mapping[str, Mapping[str, int]], threshold: int = 1) -> dict[str, set[str]]:
    """Relevant documents per judged query: ``grade >= threshold``."""
    return {q: {d for d, g in docs.items() if g >= threshold} for q, docs in qrels.items()}


@dataclass
class LabelledPairs:
    query_ids: list[str]
    doc_ids: list[str]
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.doc_ids)


def labelled_pairs(run: Run, qrels: Mapping[str, Mapping[str, int]], depth: int, rel_threshold: int = 1,
                   query_ids: Sequence[str] | None = None) -> LabelledPairs:
    """Top-``depth`` candidates of each judged query (or of ``query_ids``) with binary labels;
    documents without a judgment count as non-relevant."""
    relevant = binarize(qrels, rel_threshold)
    qids = [q for q in (query_ids if query_ids is not None else qrels) if q in relevant and q in run]
    q_out, d_out, y = [], [], []
    for q in qids:
        for did, _ in run[q][:depth]:
            q_out.append(q)
            d_out.append(did)
            y.append(1.0 if did in relevant[q] else 0.0)
    return LabelledPairs(q_out, d_out, np.asarray(y, dtype=np.float64))


def score_pairs_of(model, pairs: LabelledPairs, queries: Mapping[str, str], corpus, batch_size: int = 64,
                   bf16: bool = False, progress: bool = False) -> LabelledPairs:
    """Fill ``pairs.scores`` with the model's scores (what ``rerank`` would see)."""
    pairs.scores = np.asarray(model.score_pairs([queries[q] for q in pairs.query_ids],
                                                [corpus.text(d) for d in pairs.doc_ids],
                                                batch_size=batch_size, bf16=bf16, progress=progress),
                              dtype=np.float64)
    return pairs


# --- folding into a cross-encoder's classification head --------------------------------------

def classification_head(hf_model):
    """The final ``nn.Linear`` producing the single relevance logit of a HF sequence-classification
    model (BERT/DeBERTa ``classifier``, RoBERTa/ELECTRA ``classifier.out_proj``, decoder ``score``)."""
    from torch import nn

    for name in ("classifier", "score"):
        mod = getattr(hf_model, name, None)
        if isinstance(mod, nn.Linear):
            return mod
        if mod is not None and isinstance(getattr(mod, "out_proj", None), nn.Linear):
            return mod.out_proj
    return None


def fold_into_head(hf_model, a: float, b: float) -> bool:
    """``w ← a·w, bias ← a·bias + b`` in place, so the model's plain logit is ``a·s + b``.
    Returns False (and changes nothing) when the head cannot express it: no single-logit linear
    head found, or a bias-free head and ``b != 0``."""
    import torch

    head = classification_head(hf_model)
    if head is None or head.out_features != 1 or (head.bias is None and b != 0.0):
        return False
    with torch.no_grad():
        # in float64, then back: keeps the folded logit within float32 rounding of a·s + b
        w = head.weight.double() * a
        head.weight.copy_(w.to(head.weight.dtype))
        if head.bias is not None:
            head.bias.copy_((head.bias.double() * a + b).to(head.bias.dtype))
    return True


def compose(outer: Calibration, inner: Mapping[str, Any] | None) -> tuple[float, float]:
    """``outer ∘ inner`` as one ``(a, b)``: a model that already applies ``inner`` at scoring time."""
    if not inner or inner.get("folded_into_head"):
        return outer.a, outer.b
    a1, b1 = float(inner["a"]), float(inner["b"])
    return outer.a * a1, outer.a * b1 + outer.b


# --- reliability diagram ---------------------------------------------------------------------

def reliability_diagram(path: str | Path, curves: Mapping[str, tuple[Any, Any]], n_bins: int = 15,
                        title: str | None = None) -> Path:
    """PNG: observed positive rate vs mean predicted probability per bin (top) and bin counts
    (bottom, log scale), one curve per ``{name: (probs, labels)}``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rerankforge.utils.io import save_figure

    fig = Figure(figsize=(6, 7))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    for i, (name, (probs, labels)) in enumerate(curves.items()):
        bins = [b for b in reliability_bins(probs, labels, n_bins) if b["count"]]
        ece = expected_calibration_error(probs, labels, n_bins)
        top.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                 label=f"{name} (ECE {ece:.4f})")
        offset = (i - (len(curves) - 1) / 2) * width / max(len(curves), 1)
        bottom.bar([(b["lo"] + b["hi"]) / 2 + offset for b in bins], [b["count"] for b in bins],
                   width=width / max(len(curves), 1), label=name, alpha=0.8)
    top.set_ylabel("observed fraction relevant")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or "Reliability diagram")
    bottom.set_yscale("log")
    bottom.set_xlabel(f"predicted probability ({n_bins} bins)")
    bottom.set_ylabel("pairs")
    fig.tight_layout()
    return save_figure(fig, path)
