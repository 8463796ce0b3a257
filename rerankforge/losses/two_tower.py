"""Two-tower click model: a relevance tower (any reranker's scores) plus a learned position-bias
tower, trained jointly on clicks; only the relevance tower is exported.

With rel_d = a * s_d + c (a > 0, learned; s_d the reranker's score) and a per-rank bias logit b_r,
the click probability of document d shown at rank r is

    form="pbm"      :  P(click | d, r) = sigmoid(b_r) * sigmoid(rel_d)     (examination x relevance)
    form="additive" :  P(click | d, r) = sigmoid(rel_d + b_r)              (logit-additive towers)

and the loss is the click log-likelihood of the log, aggregated per (query, document, rank) cell
from the per-rank counts V (views) and C (clicks) the click groups carry:

    L = - 1/sum(V) * sum_{q,d,r} [ C_qdr log P(click | d, r) + (V_qdr - C_qdr) log(1 - P(click | d, r)) ]

which equals the per-impression binary cross-entropy, summed over impressions, with one model
forward per (query, document) instead of one per impression.

The additive form is the two-tower model of Zhuang et al. (SIGIR 2021, "Cross-Positional
Attention for Debiasing Clicks"; Haldar et al. 2020; and the "two-tower" baseline of Hager et al.,
SIGIR 2024, "Unbiased Learning to Rank Meets Reality"); the product form is the PBM (Richardson et
al. 2007; Craswell et al. 2008) with a neural relevance term, i.e. regression-EM's model (Wang et
al., WSDM 2018) fitted by gradient descent instead of EM. In the product form sigmoid(b_r) /
sigmoid(b_1) is the examination propensity of rank r relative to rank 1 — what ``describe()``
reports as ``propensity``; in the additive form exp(b_r - b_1) is the click odds ratio of rank r.

The bias tower (``num_ranks`` logits, one curve shared by all queries: a per-context tower is not
implemented) and the calibration (a, c) are
parameters of this loss: the trainer puts them in the optimizer (``lr``: their learning rate)
and saves them in checkpoints, and ``train_summary.json`` records the learned curve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rerankforge.losses._click_common import (RelevanceCalibration, bernoulli_nll, click_counts, count_inputs,
                                              log1m_exp, seen_ranks)
from rerankforge.losses.base import RankingLoss, as_float, register_loss

FORMS = ("pbm", "additive")


@register_loss("two_tower")
class TwoTowerClickLoss(RankingLoss):
    target = "clicks"

    def __init__(self, form: str = "pbm", num_ranks: int = 50, lr: float = 0.05, learn_scale: bool = True):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
        if int(num_ranks) < 1:
            raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
        self.form = form
        self.num_ranks = int(num_ranks)
        self.param_lr = float(lr)
        self.bias = nn.Parameter(torch.zeros(self.num_ranks))
        self.relevance = RelevanceCalibration(learn_scale)
        self.register_buffer("seen", torch.zeros(self.num_ranks))

    def click_log_probs(self, scores: torch.Tensor, depth: int, valid: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(click), log P(no click)), each ``[B, G, depth]``."""
        rel = self.relevance(as_float(scores), valid)[:, :, None]
        b = self.bias[:depth][None, None, :]
        if self.form == "additive":
            z = rel + b
            return F.logsigmoid(z), F.logsigmoid(-z)
        log_p = F.logsigmoid(b) + F.logsigmoid(rel)
        return log_p, log1m_exp(log_p)

    def forward(self, scores, clicks, mask, weights=None, views=None):
        scores, views, clicks, cells, valid = count_inputs("two_tower", self.num_ranks, scores, clicks, mask, views)
        log_p, log_1mp = self.click_log_probs(scores, views.shape[-1], valid)
        with torch.no_grad():
            self.seen[: views.shape[-1]] += views.where(cells, torch.zeros_like(views)).sum((0, 1))
        return bernoulli_nll(log_p, log_1mp, views, clicks, cells)

    def forward_batch(self, scores, batch):
        views, clicks = click_counts(batch)
        return self(scores, clicks, batch.mask, None, views)

    def propensity(self) -> list[float]:
        """The learned curve relative to rank 1, over the ranks trained on."""
        k = seen_ranks(self.seen) or self.num_ranks
        b = self.bias.detach()[:k].double()
        if self.form == "additive":
            return torch.exp(b - b[0]).tolist()
        theta = torch.sigmoid(b)
        return (theta / theta[0]).tolist()

    def describe(self):
        k = seen_ranks(self.seen) or self.num_ranks
        return {"form": self.form, "propensity": self.propensity(), "bias_logit": self.bias.detach()[:k].tolist(),
                "relevance_scale": float(self.relevance.log_scale.detach().exp()),
                "relevance_offset": float(self.relevance.offset.detach())}
