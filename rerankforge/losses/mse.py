"""Pointwise MSE against teacher scores (score distillation).

    L = mean_i  w_i * (s_i - t_i)^2

over every real candidate that has a teacher score (NaN teacher = missing: the candidate is left
out). The pointwise distillation baseline of Hofstätter et al., 2020 ("Improving Efficient Neural
Ranking Models with Cross-Architecture Knowledge Distillation"); it ties the student to the
teacher's scale, which MarginMSE (``margin_mse``) deliberately does not. ``weights`` scale each
candidate's term; the mean divides by the number of candidates. Matches sentence-transformers'
cross-encoder ``MSELoss`` on flattened pairs.
"""

from __future__ import annotations

from rerankforge.losses.base import RankingLoss, candidate_weights, mean_over, prepare, register_loss


@register_loss("mse")
class TeacherMSE(RankingLoss):
    target = "teacher"

    def forward(self, scores, targets, mask, weights=None):
        s, t, valid = prepare(scores, targets, mask)
        terms = (s - t).square()
        return mean_over(terms * candidate_weights(weights, valid, s.dtype), valid)
