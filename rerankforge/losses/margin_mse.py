"""MarginMSE: match the teacher's score margins, not its scores.

    L = 1/|P| sum_{(i,j) in P}  w_ij * ( (s_i - s_j) - (t_i - t_j) )^2

(Hofstätter et al., 2020, "Improving Efficient Neural Ranking Models with Cross-Architecture
Knowledge Distillation"), where the classic case is one (query, positive, negative) triple.
The loss only sees (scores, teacher, mask), so P is defined from the teacher, over the real
candidates that have a teacher score (NaN = missing: left out):

* ``pairs="all"`` (default): every pair i < j. Order- and anchor-free; uses all G(G-1)/2
  margins (per group, their mean is twice the sample variance of s - t).
* ``pairs="anchor"``: (a, j) for every other candidate j, with a = the teacher's top candidate.
  This is sentence-transformers' multi-negative ``MarginMSELoss`` (positive vs each negative)
  whenever the teacher ranks the positive first. An exact tie for the teacher's top is broken
  by position.

With two candidates both modes give the single pair, and since the squared error is symmetric
in (i, j) they equal sentence-transformers' ``MarginMSELoss`` whatever the order.
``weights``: a pair is weighted by the weight of its more relevant item by teacher score (the
mean of both on an exact teacher tie); the mean divides by |P| (batch-level, like
sentence-transformers' mean over batch x negatives).
"""

from __future__ import annotations

import torch

from rerankforge.losses.base import RankingLoss, candidate_weights, mean_over, prepare, register_loss

PAIRS = ("all", "anchor")


@register_loss("margin_mse")
class MarginMSE(RankingLoss):
    target = "teacher"

    def __init__(self, pairs: str = "all"):
        super().__init__()
        if pairs not in PAIRS:
            raise ValueError(f"pairs must be one of {', '.join(PAIRS)}, got {pairs!r}")
        self.pairs = pairs

    def forward(self, scores, targets, mask, weights=None):
        s, t, valid = prepare(scores, targets, mask)
        w = candidate_weights(weights, valid, s.dtype)
        # (s_i - s_j) - (t_i - t_j) = d_i - d_j
        d = s - t
        if self.pairs == "anchor":
            a = torch.where(valid, t, torch.full_like(t, float("-inf"))).argmax(dim=-1, keepdim=True)
            is_anchor = torch.zeros_like(valid).scatter(-1, a, True)
            terms = (d.gather(-1, a) - d).square() * w.gather(-1, a)
            return mean_over(terms, valid & ~is_anchor & valid.gather(-1, a))
        G = s.shape[-1]
        upper = torch.ones(G, G, dtype=torch.bool, device=s.device).triu(1)
        pairs = valid[:, :, None] & valid[:, None, :] & upper
        ti, tj = t[:, :, None], t[:, None, :]
        wi, wj = w[:, :, None], w[:, None, :]
        w_pair = torch.where(ti > tj, wi, torch.where(ti < tj, wj, (wi + wj) / 2))
        terms = (d[:, :, None] - d[:, None, :]).square() * w_pair
        return mean_over(terms, pairs)
