"""DLA, the dual learning algorithm (Ai, Bi, Luo, Guo and Croft, SIGIR 2018, "Unbiased Learning to
Rank with Unbiased Propensity Estimation"): the ranker and a propensity model are learned jointly,
each from clicks reweighted by the other.

The propensity model is one logit g_r per rank; theta_r = exp(g_r - g_1) (the softmax over ranks
relative to rank 1). The ranker's relevance estimate is its softmax over the group,
gamma_d = exp(s_d - max_j s_j). With the per-rank counts V (views) and C (clicks) of each
candidate of a query group (aggregated over the query's impressions):

    ranker (inverse propensity weighting):
        t_d  ∝  1/n_d * sum_r C_dr * min(theta_1 / theta_r, M),      n_d = sum_r V_dr
        L_rank = - sum_d t_d log softmax(s)_d                          (softmax over the group)

    propensity (inverse relevance weighting):
        u_r  ∝  1/V_r * sum_d C_dr * min(gamma_max / gamma_d, M),    V_r = sum_d V_dr
        L_prop = - sum_r u_r log softmax(g)_r                          (softmax over the ranks shown)

    L = mean over groups of (L_rank + L_prop); t and u are constants (no gradient), so L_rank
    trains only the ranker and L_prop only the propensities.

Under the PBM, E[C_dr] = V_dr theta_r gamma_d, so t_d ∝ gamma_d and u_r ∝ theta_r at the fixed
point: each softmax is fitted to the other side's unbiased estimate. This is the paper's softmax
(listwise) loss pair with the per-session sums replaced by per-(query, document, rank) counts —
equal in expectation, and one forward per (query, document) instead of one per session; the
ratio-to-rank-1 weights and the clip M (``max_weight``) follow the authors' ULTRA toolbox. With
theta fixed at an estimated curve, L_rank is the ``ipw`` arm's aggregated softmax cross-entropy.
``describe()`` reports the learned curve as ``propensity`` (theta_r, rank 1 = 1).
"""

from __future__ import annotations

import torch
from torch import nn

from rerankforge.losses._click_common import cell_mask, check_depth, click_counts, seen_ranks
from rerankforge.losses.base import RankingLoss, as_float, masked_log_softmax, mean_over, register_loss


@register_loss("dla")
class DualLearningAlgorithm(RankingLoss):
    target = "clicks"

    def __init__(self, num_ranks: int = 50, lr: float = 0.05, max_weight: float = 20.0,
                 propensity_weight: float = 1.0):
        super().__init__()
        if int(num_ranks) < 1:
            raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
        if not max_weight >= 1.0:
            raise ValueError(f"max_weight must be >= 1, got {max_weight}")
        self.num_ranks = int(num_ranks)
        self.param_lr = float(lr)
        self.max_weight = float(max_weight)
        self.propensity_weight = float(propensity_weight)
        self.logits = nn.Parameter(torch.zeros(self.num_ranks))
        self.register_buffer("seen", torch.zeros(self.num_ranks))

    def forward(self, scores, clicks, mask, weights=None, views=None):
        if views is None:
            raise ValueError("dla needs per-rank views as well as clicks")
        check_depth(views, self.num_ranks, "dla")
        k = views.shape[-1]
        s = as_float(scores)
        views, clicks = views.to(s.dtype), clicks.to(s.dtype)
        cells = cell_mask(views, mask)
        valid = mask.bool() & cells.any(-1)
        zero = torch.zeros_like(views)
        g = self.logits[:k]
        with torch.no_grad():
            theta = torch.exp(g - g[0])
            ipw = (1.0 / theta).clamp(max=self.max_weight)
            n_d = views.where(cells, zero).sum(-1)
            t = (clicks.where(cells, zero) * ipw).sum(-1) / n_d.clamp_min(1.0)
            t = torch.where(valid, t, torch.zeros_like(t))
            t_sum = t.sum(-1, keepdim=True)
            has_click = t_sum.squeeze(-1) > 0
            t = t / t_sum.clamp_min(torch.finfo(s.dtype).tiny)

            key = torch.where(valid, s.detach(), torch.full_like(s, float("-inf")))
            top = key.amax(-1, keepdim=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            irw = torch.exp(top - key).clamp(max=self.max_weight)  # gamma_max / gamma_d
            irw = torch.where(valid, irw, torch.zeros_like(irw))
            v_r = views.where(cells, zero).sum(1)  # [B, K]
            u = (clicks.where(cells, zero) * irw[:, :, None]).sum(1) / v_r.clamp_min(1.0)
            shown = v_r > 0
            u_sum = u.sum(-1, keepdim=True)
            u = u / u_sum.clamp_min(torch.finfo(s.dtype).tiny)
            self.seen[:k] += v_r.sum(0)
        s_clean = torch.where(valid, s, torch.zeros_like(s))
        rank_loss = -(t * masked_log_softmax(s_clean, valid)).sum(-1)
        g_rows = g[None, :].expand(len(s), k)
        prop_loss = -(u * masked_log_softmax(g_rows, shown)).sum(-1)
        return mean_over(rank_loss + self.propensity_weight * prop_loss, has_click)

    def forward_batch(self, scores, batch):
        views, clicks = click_counts(batch)
        return self(scores, clicks, batch.mask, None, views)

    def propensity(self) -> list[float]:
        k = seen_ranks(self.seen) or self.num_ranks
        g = self.logits.detach()[:k].double()
        return torch.exp(g - g[0]).tolist()

    def describe(self):
        return {"propensity": self.propensity()}
