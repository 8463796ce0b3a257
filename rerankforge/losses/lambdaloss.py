"""LambdaLoss: pairwise logistic loss weighted by the pair's effect on NDCG.

With candidates sorted by the model's scores (rank r = 1..n), D_r = log2(1 + r),
G_i = (2^max(y_i, 0) - 1) / maxDCG@k:

    L = 1/|P| sum_{(i,j) in P}  w_i * δ_ij * -log2 σ(sigma * (s_i - s_j)),   P = {(i, j): y_i > y_j}

restricted (if ``k``) to pairs with at least one item in the model's top k (Wang et al., CIKM
2018, "The LambdaLoss Framework for Ranking Metric Optimization"). ``weighting`` picks δ_ij:

* ``ndcgloss2pp`` (default): mu * δ^NDCGLoss2 + δ^LambdaRank — the best scheme in the paper;
* ``ndcgloss2``: |1/D_|r_i-r_j| - 1/D_(|r_i-r_j|+1)| * |G_i - G_j|;
* ``lambdarank``: |1/D_r_i - 1/D_r_j| * |G_i - G_j|;
* ``ndcgloss1``: G_i / D_r_i, summed over *all* ordered pairs of real candidates (i = j
  included), as in allRank;
* ``none``: δ = 1 (RankNet).

This is the allRank / sentence-transformers 6 ``LambdaLoss`` computation (same schemes, default
ndcgloss2pp with mu = 10, log2 by default, mean over all selected pairs of the batch), and it
matches its values. The mean runs over the same pair set, so pairs whose δ is 0 (e.g. both
labels <= 0) still count in the denominator, as there. ``weights``: each pair is weighted by the
weight of its more relevant item i (for ``ndcgloss1``, of i); gains are not reweighted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rerankforge.losses.base import (RankingLoss, candidate_weights, check_k, check_log, mean_over, prepare,
                                     register_loss)

SCHEMES = ("ndcgloss2pp", "ndcgloss2", "lambdarank", "ndcgloss1", "none")


def _ndcgloss2(gain: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    n = discount.shape[-1]
    pos = torch.arange(n, device=gain.device)
    gap = (pos[:, None] - pos[None, :]).abs()  # |r_i - r_j| >= 1 off the diagonal
    # log2(1 + gap) and log2(2 + gap); the diagonal (gap 0) is zeroed below.
    d_gap = torch.log2(1.0 + gap.clamp_min(1).to(gain.dtype))
    d_next = torch.log2(2.0 + gap.to(gain.dtype))
    delta = (1.0 / d_gap - 1.0 / d_next).abs()
    delta = delta.masked_fill(gap == 0, 0.0)
    return delta[None] * (gain[:, :, None] - gain[:, None, :]).abs()


def _lambdarank(gain: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    inv = 1.0 / discount
    return (inv[:, :, None] - inv[:, None, :]).abs() * (gain[:, :, None] - gain[:, None, :]).abs()


@register_loss("lambdaloss")
class LambdaLoss(RankingLoss):
    target = "labels"
    needs_positive = True

    def __init__(self, weighting: str = "ndcgloss2pp", mu: float = 10.0, k: int | None = None, sigma: float = 1.0,
                 eps: float = 1e-10, reduction_log: str = "binary"):
        super().__init__()
        if weighting not in SCHEMES:
            raise ValueError(f"weighting must be one of {', '.join(SCHEMES)}, got {weighting!r}")
        self.weighting = weighting
        self.mu = float(mu)
        self.k = check_k(k)
        self.sigma = float(sigma)
        self.eps = float(eps)
        self.reduction_log = check_log(reduction_log)

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        w = candidate_weights(weights, valid, s.dtype)
        n = s.shape[-1]
        k = n if self.k is None else min(self.k, n)

        # Work in the model's ranking: real candidates first, best score first.
        key = torch.where(valid, s.detach(), torch.full_like(s, float("-inf")))
        order = key.argsort(dim=-1, descending=True, stable=True)
        s_r, y_r, v_r, w_r = (x.gather(-1, order) for x in (s, y, valid, w))

        pairs = v_r[:, :, None] & v_r[:, None, :]
        if self.weighting != "ndcgloss1":
            pairs = pairs & (y_r[:, :, None] > y_r[:, None, :])
        in_top = torch.arange(n, device=s.device) < k
        pairs = pairs & (in_top[:, None] | in_top[None, :])

        discount = torch.log2(2.0 + torch.arange(n, device=s.device, dtype=s.dtype))[None]  # log2(1 + rank)
        ideal = torch.where(valid, y, torch.zeros_like(y)).clamp_min(0.0).sort(dim=-1, descending=True).values
        max_dcg = ((torch.pow(2.0, ideal) - 1.0) / discount)[:, :k].sum(-1, keepdim=True).clamp_min(self.eps)
        gain = (torch.pow(2.0, y_r.clamp_min(0.0)) - 1.0) / max_dcg

        if self.weighting == "ndcgloss2pp":
            delta = self.mu * _ndcgloss2(gain, discount) + _lambdarank(gain, discount)
        elif self.weighting == "ndcgloss2":
            delta = _ndcgloss2(gain, discount)
        elif self.weighting == "lambdarank":
            delta = _lambdarank(gain, discount)
        elif self.weighting == "ndcgloss1":
            delta = (gain / discount)[:, :, None].expand(-1, -1, n)
        else:
            delta = torch.ones((), dtype=s.dtype, device=s.device)

        terms = -F.logsigmoid(self.sigma * (s_r[:, :, None] - s_r[:, None, :])) * delta * w_r[:, :, None]
        if self.reduction_log == "binary":
            terms = terms / math.log(2.0)
        return mean_over(terms, pairs)
