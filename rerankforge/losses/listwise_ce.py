"""Listwise softmax cross-entropy with graded targets.

    L = - sum_i y_i log softmax(s)_i,   y_i = (2^rel_i - 1) / sum_j (2^rel_j - 1)

over the real candidates of each group, averaged over groups that have a positive. With one
positive this is the InfoNCE/"localised contrastive" loss of Gao et al., ECIR 2021
("Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline"); the graded form is
the ListNet-style top-one cross-entropy (Cao et al., ICML 2007). ``weights`` (e.g. inverse
propensities) scale each candidate's gain before normalisation; ``temperature`` divides the
scores.
"""

from __future__ import annotations

import torch

from rerankforge.data.labels import exp_gain
from rerankforge.losses.base import (RankingLoss, candidate_weights, check_temperature, masked_log_softmax, mean_over,
                                     prepare, register_loss)


@register_loss("listwise_ce")
class ListwiseSoftmaxCE(RankingLoss):
    target = "labels"
    needs_positive = True

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        gain = exp_gain(y) * candidate_weights(weights, valid, s.dtype)
        total = gain.sum(-1, keepdim=True)
        has_pos = total.squeeze(-1) > 0
        target = gain / total.clamp_min(torch.finfo(s.dtype).tiny)
        per_group = -(target * masked_log_softmax(s / self.temperature, valid)).sum(-1)
        return mean_over(per_group, has_pos)
