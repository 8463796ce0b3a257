"""Trust bias (affine) click model, learned jointly with the ranker: a two-tower model whose bias
tower has two logits per rank.

With gamma_d = sigmoid(a * s_d + c) the relevance tower's click probability and per-rank logits
u_r, v_r,

    P(click | d, r) = sigmoid(u_r) * gamma_d + sigmoid(v_r) * (1 - gamma_d)
                    = alpha_r * gamma_d + beta_r,    alpha_r = sigmoid(u_r) - sigmoid(v_r), beta_r = sigmoid(v_r)

the affine click model of trust bias (Agarwal et al., WWW 2019, "Addressing Trust Bias for
Unbiased Learning-to-Rank": P(click) = theta_r (eps+_r gamma + eps-_r (1 - gamma))) for which
Vardasbi, Oosterhuis and de Rijke (CIKM 2020, "When Inverse Propensity Scoring does not Work:
Affine Corrections for Unbiased Learning to Rank") derive the affine estimator (c - beta_r) /
alpha_r. Here alpha and beta are not plugged into an estimator but learned by maximising the same
click log-likelihood as ``two_tower``:

    L = - 1/sum(V) * sum_{q,d,r} [ C_qdr log P(click | d, r) + (V_qdr - C_qdr) log(1 - P(click | d, r)) ]

PBM is the special case beta_r = theta_r * eps_neg, alpha_r = theta_r (eps_pos - eps_neg), i.e. the
simulator's noisy clicks. ``describe()`` reports alpha, beta and ``propensity`` =
sigmoid(u_r) / sigmoid(u_1) (the relative click probability of a fully relevant document).
"""

from __future__ import annotations

import torch
from torch import nn

from rerankforge.losses._click_common import RelevanceCalibration, bernoulli_nll, click_counts, count_inputs, seen_ranks
from rerankforge.losses.base import RankingLoss, register_loss


@register_loss("trust_bias")
class TrustBiasClickLoss(RankingLoss):
    target = "clicks"

    def __init__(self, num_ranks: int = 50, lr: float = 0.05, learn_scale: bool = True):
        super().__init__()
        if int(num_ranks) < 1:
            raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
        self.num_ranks = int(num_ranks)
        self.param_lr = float(lr)
        # start near "relevant documents are clicked, others rarely"
        self.pos_logit = nn.Parameter(torch.full((self.num_ranks,), 1.0))
        self.neg_logit = nn.Parameter(torch.full((self.num_ranks,), -2.0))
        self.relevance = RelevanceCalibration(learn_scale)
        self.register_buffer("seen", torch.zeros(self.num_ranks))

    def forward(self, scores, clicks, mask, weights=None, views=None):
        scores, views, clicks, cells, valid = count_inputs("trust_bias", self.num_ranks, scores, clicks, mask, views)
        k = views.shape[-1]
        gamma = torch.sigmoid(self.relevance(scores, valid))[:, :, None]
        p = torch.sigmoid(self.pos_logit[:k]) * gamma + torch.sigmoid(self.neg_logit[:k]) * (1 - gamma)
        p = p.clamp(1e-6, 1 - 1e-6)
        with torch.no_grad():
            self.seen[:k] += views.where(cells, torch.zeros_like(views)).sum((0, 1))
        return bernoulli_nll(torch.log(p), torch.log1p(-p), views, clicks, cells)

    def forward_batch(self, scores, batch):
        views, clicks = click_counts(batch)
        return self(scores, clicks, batch.mask, None, views)

    def describe(self):
        k = seen_ranks(self.seen) or self.num_ranks
        pos = torch.sigmoid(self.pos_logit.detach()[:k].double())
        neg = torch.sigmoid(self.neg_logit.detach()[:k].double())
        return {"propensity": (pos / pos[0]).tolist(), "alpha": (pos - neg).tolist(), "beta": neg.tolist(),
                "relevance_scale": float(self.relevance.log_scale.detach().exp()),
                "relevance_offset": float(self.relevance.offset.detach())}
