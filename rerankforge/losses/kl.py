"""KL-divergence distillation from teacher scores with temperature.

    p = softmax(t / T) (times weights, renormalised),   q = softmax(s / T)
    L = T^2 * mean over groups of  KL(p || q) = T^2 * sum_i p_i (log p_i - log q_i)

(Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"; used for listwise
reranker distillation e.g. by Pradeep et al., 2022, "Squeezing Water from a Stone"). The T^2
factor keeps gradient magnitudes comparable across temperatures. Softmaxes run over the real
candidates of each group that have a teacher score (NaN = missing: left out of both p and q).
``weights`` scale each candidate's teacher probability before renormalisation (as ``listnet``);
uniform weights change nothing. The mean is over groups with at least one teacher score
(``torch.nn.KLDivLoss(reduction="batchmean")`` when every group has one).
"""

from __future__ import annotations

import torch

from rerankforge.losses.base import (RankingLoss, candidate_weights, check_temperature, masked_log_softmax, mean_over,
                                     prepare, register_loss, weighted_target_distribution)


@register_loss("kl")
class KLDistillation(RankingLoss):
    target = "teacher"

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def forward(self, scores, targets, mask, weights=None):
        s, t, valid = prepare(scores, targets, mask)
        p = weighted_target_distribution(t, valid, candidate_weights(weights, valid, s.dtype), self.temperature)
        logq = masked_log_softmax(s / self.temperature, valid)
        logp = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        per_group = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)
        return mean_over(per_group, p.sum(-1) > 0) * self.temperature**2
