"""RankNet: logistic loss over every label-ordered pair.

    L = 1/|P| sum_{(i,j) in P}  w_i * -log σ(sigma * (s_i - s_j)),   P = {(i, j): y_i > y_j}

(Burges et al., ICML 2005, "Learning to Rank using Gradient Descent"). P collects the pairs of
real candidates with different labels across the whole batch, more relevant item first, so any
number of positives and graded labels work and groups without a label difference add nothing.
``weights``: each pair is weighted by the weight of its more relevant item i (as in
propensity-weighted pairwise LTR: the click is what the propensity corrects); the mean divides
by |P|. ``k``: keep only pairs with at least one item in the model's current top k.

Same definition and batch-level mean as sentence-transformers' ``RankNetLoss`` (LambdaLoss with
no weighting). Deliberate difference: the default logarithm here is natural (the paper's
formula); sentence-transformers defaults to ``reduction_log="binary"`` (log2) — set
``reduction_log: binary`` to reproduce its values exactly.
"""

from __future__ import annotations

import math

import torch.nn.functional as F

from rerankforge.losses.base import (RankingLoss, candidate_weights, check_k, check_log, mean_over, ordered_pairs,
                                     prepare, register_loss, score_ranks)


@register_loss("ranknet")
class RankNet(RankingLoss):
    target = "labels"
    needs_positive = True

    def __init__(self, sigma: float = 1.0, k: int | None = None, reduction_log: str = "natural"):
        super().__init__()
        self.sigma = float(sigma)
        self.k = check_k(k)
        self.reduction_log = check_log(reduction_log)

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        pairs = ordered_pairs(y, valid)
        if self.k is not None:
            top = score_ranks(s, valid) < self.k
            pairs = pairs & (top[:, :, None] | top[:, None, :])
        terms = -F.logsigmoid(self.sigma * (s[:, :, None] - s[:, None, :]))
        if self.reduction_log == "binary":
            terms = terms / math.log(2.0)
        w = candidate_weights(weights, valid, s.dtype)[:, :, None]
        return mean_over(terms * w, pairs)
