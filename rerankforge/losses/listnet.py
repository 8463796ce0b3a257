"""ListNet: cross-entropy between the top-one distributions of the labels and of the scores.

    p_i = w_i exp(y_i / T_y) / sum_j w_j exp(y_j / T_y),   q = softmax(s / T)
    L   = mean over groups of  - sum_i p_i log q_i

(Cao et al., ICML 2007, "Learning to Rank: From Pairwise Approach to Listwise Approach"), with
softmaxes over the real candidates of each group. ``temperature`` (T) divides the scores,
``label_temperature`` (T_y) the labels: below 1 it sharpens binary targets (with 1 positive
among 16, T_y = 1 gives the positive only e/(e+15) ≈ 15% of the target mass).
``weights`` scale each candidate's target probability before renormalisation (a weight-0
candidate still competes in q); uniform weights change nothing.

Groups whose labels are all equal have a uniform target and are kept (they pull the scores
together), as in sentence-transformers' ``ListNetLoss``, which this matches at T = T_y = 1
(same definition: raw labels softmaxed, mean over groups).
Compare ``listwise_ce``, which uses 2^y - 1 gains and skips groups without a positive.
"""

from __future__ import annotations

from rerankforge.losses.base import (RankingLoss, candidate_weights, check_temperature, masked_log_softmax, mean_over,
                                     prepare, register_loss, weighted_target_distribution)


@register_loss("listnet")
class ListNet(RankingLoss):
    target = "labels"

    def __init__(self, temperature: float = 1.0, label_temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.label_temperature = check_temperature(label_temperature, "label_temperature")

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        p = weighted_target_distribution(y, valid, candidate_weights(weights, valid, s.dtype), self.label_temperature)
        logq = masked_log_softmax(s / self.temperature, valid)
        per_group = -(p * logq).sum(-1)
        return mean_over(per_group, p.sum(-1) > 0)
