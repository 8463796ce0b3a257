"""Pointwise binary cross-entropy on logits.

    L = mean_i  w_i * -[ y_i log σ(s_i) + (1 - y_i) log(1 - σ(s_i)) ],   y_i = clip(label_i / max_label, 0, 1)

over every real candidate of the batch (the "monoBERT" objective of Nogueira & Cho, 2019,
"Passage Re-ranking with BERT"). Binary labels use ``max_label=1``; graded labels become soft
targets with ``max_label`` = the top grade (e.g. 3 maps grades 0..3 to 0, 1/3, 2/3, 1).
``pos_weight`` multiplies the positive part as in ``torch.nn.BCEWithLogitsLoss``. ``weights``
scale each candidate's term; the mean divides by the number of candidates, not by sum(w).
Matches sentence-transformers' ``BinaryCrossEntropyLoss`` on flattened pairs.
"""

from __future__ import annotations

import torch.nn.functional as F

from rerankforge.losses.base import RankingLoss, candidate_weights, mean_over, prepare, register_loss


@register_loss("bce")
class BinaryCrossEntropy(RankingLoss):
    target = "labels"

    def __init__(self, max_label: float = 1.0, pos_weight: float | None = None):
        super().__init__()
        if not max_label > 0:
            raise ValueError(f"max_label must be > 0, got {max_label}")
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.max_label = float(max_label)
        self.pos_weight = None if pos_weight is None else float(pos_weight)

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        y = (y / self.max_label).clamp(0.0, 1.0)
        pos_weight = None if self.pos_weight is None else s.new_tensor(self.pos_weight)
        terms = F.binary_cross_entropy_with_logits(s, y, reduction="none", pos_weight=pos_weight)
        return mean_over(terms * candidate_weights(weights, valid, s.dtype), valid)
