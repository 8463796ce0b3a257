"""Listwise softmax cross-entropy with graded targets.

    L = - sum_i y_i log softmax(s)_i,   y_i = (2^rel_i - 1) / sum_j (2^rel_j - 1)

over the real candidates of each group, averaged over groups that have a positive. With one
positive this is the InfoNCE/"localised contrastive" loss of Gao et al., ECIR 2021
("Rethink Training of BERT Rerankers in Multi-Stage Retrieval Pipeline"); the graded form is
the ListNet-style top-one cross-entropy (Cao et al., ICML 2007). ``weights`` (e.g. inverse
propensities) scale each candidate's gain before normalisation.
"""

from __future__ import annotations

import torch

from rerankforge.data.labels import exp_gain
from rerankforge.losses.base import RankingLoss, masked_scores, register_loss


@register_loss("listwise_ce")
class ListwiseSoftmaxCE(RankingLoss):
    target = "labels"

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, scores, targets, mask, weights=None):
        gain = exp_gain(targets) * mask
        if weights is not None:
            gain = gain * weights
        total = gain.sum(-1, keepdim=True)
        has_pos = total.squeeze(-1) > 0
        if not bool(has_pos.any()):
            return scores.sum() * 0.0
        y = gain / total.clamp_min(1e-12)
        logp = torch.log_softmax(masked_scores(scores.float(), mask) / self.temperature, dim=-1)
        per_group = -(y * logp.masked_fill(~mask, 0.0)).sum(-1)
        return per_group[has_pos].mean()
