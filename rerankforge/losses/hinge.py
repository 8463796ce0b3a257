"""Pairwise hinge (margin ranking) loss over every label-ordered pair.

    L = 1/|P| sum_{(i,j) in P}  w_i * max(0, margin - (s_i - s_j)),   P = {(i, j): y_i > y_j}

The RankSVM objective (Herbrich et al., 2000; Joachims, KDD 2002, "Optimizing Search Engines
using Clickthrough Data"), as in ``torch.nn.MarginRankingLoss``. P spans the pairs of real
candidates with different labels across the batch, more relevant item first. ``weights``: each
pair is weighted by the weight of its more relevant item i (Propensity SVM-Rank, Joachims et al.,
WSDM 2017); the mean divides by |P|.
"""

from __future__ import annotations

import torch

from rerankforge.losses.base import RankingLoss, candidate_weights, mean_over, ordered_pairs, prepare, register_loss


@register_loss("hinge")
class PairwiseHinge(RankingLoss):
    target = "labels"
    needs_positive = True

    def __init__(self, margin: float = 1.0):
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        pairs = ordered_pairs(y, valid)
        terms = torch.relu(self.margin - (s[:, :, None] - s[:, None, :]))
        w = candidate_weights(weights, valid, s.dtype)[:, :, None]
        return mean_over(terms * w, pairs)
