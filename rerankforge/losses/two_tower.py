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

How the bias tower learns (``bias_fit``):

    "joint"   : both towers descend L (the published two-tower model). When the relevance tower
                cannot fit relevance (a small reranker, a hard domain) and the logger ranks relevant
                documents high, the bias tower absorbs the relevance it misses and the learned curve
                comes out too steep (the confounding of Zhang et al., KDD 2023, "Towards
                Disentangling Relevance and Bias in Unbiased Learning to Rank"); measured on
                NFCorpus clicks, 42-49% error at ranks 1-10 where EM was within 2-7%.
    "profile" : the relevance tower descends L with the bias held fixed (detached), and the bias
                tower descends the *profile* likelihood, in which every (query, document) cell gets
                its own free relevance, the value that maximises the cell's likelihood for the
                current bias:

                    gamma*_qd(b) = argmax_g  sum_r C_qdr log P_g(click | r) + (V_qdr - C_qdr) log(1 - P_g(click | r))
                    L_bias(b)    = L with sigmoid(rel_qd) replaced by gamma*_qd(b) (pbm; rel_qd by logit
                                   gamma*_qd in the additive form)

                so the curve is learned only from how the same document's click rate changes with
                its rank (impressions shown in another order, e.g. RandTop-k shuffles), never from
                what the relevance tower gets wrong: the likelihood EM maximises for the PBM (Wang
                et al., WSDM 2018), fitted by gradient steps inside the same loop. gamma* is found by
                bisection (the cell likelihood is concave in gamma, and in its logit for the
                additive form) and is a constant for the gradient: at the maximum its own derivative
                is zero (envelope theorem). Cells seen at one rank only add no gradient to the bias.
                The returned value is L (what the relevance tower optimises); the profile term
                adds only its gradient.

What the relevance tower learns from (``relevance``):

    "likelihood" : the click log-likelihood L above (the published model): each document's absolute
                   click probability, a pointwise objective.
    "listwise"   : (needs ``bias_fit="profile"``) a listwise softmax cross-entropy over the query's
                   documents whose targets are the click rates corrected by the bias tower's current
                   curve, theta_r = sigmoid(b_r) / sigmoid(b_1), clipped as IPW clips them:

                       y_d ∝ sum_r C_qdr min(1/theta_r, max_weight) / sum_r V_qdr
                       L_rel = - sum_d y_d log softmax(s)_d

                   i.e. the objective of the ``ipw`` labels (``clicks/labels.py``) with a curve
                   learned in the same loop instead of estimated beforehand (as DLA learns its own,
                   Ai et al. 2018, but from the profile likelihood). The returned value is L_rel;
                   the bias tower still descends the profile likelihood. Naive and IPW training
                   rank with a listwise objective, which is what this option compares against.

``bias_ema`` (0 = off; e.g. 0.99) keeps an exponential moving average of the bias logits over
training steps (bias-corrected, as Adam's moments): mini-batches of a few queries carry little
information about deep ranks, so the last iterate of the bias tower wanders by several percent
around the optimum, and the average (Polyak-Ruppert) does not. With ``bias_fit="profile"`` the
relevance tower is trained against the averaged curve; ``describe()`` and ``propensity()`` report
it.

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
from rerankforge.losses.base import RankingLoss, as_float, masked_log_softmax, mean_over, register_loss

FORMS = ("pbm", "additive")
BIAS_FITS = ("joint", "profile")
RELEVANCE_OBJECTIVES = ("likelihood", "listwise")


def _bisect(derivative, lo: torch.Tensor, hi: torch.Tensor, steps: int = 40) -> torch.Tensor:
    """The root of a decreasing function on [lo, hi], elementwise; lo / hi where it has none inside."""
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        up = derivative(mid) > 0
        lo, hi = torch.where(up, mid, lo), torch.where(up, hi, mid)
    return 0.5 * (lo + hi)


@torch.no_grad()
def profile_relevance(form: str, bias: torch.Tensor, views: torch.Tensor, clicks: torch.Tensor,
                      cells: torch.Tensor) -> torch.Tensor:
    """``[B, G]``: each cell's maximum-likelihood relevance for the bias logits ``bias[K]``: the
    click probability gamma in (0, 1] for ``form="pbm"``, the logit rho for ``"additive"``."""
    zero = torch.zeros_like(views)
    v, c = views.where(cells, zero).double(), clicks.where(cells, zero).double()
    b = bias.detach().double()[None, None, :]
    if form == "additive":
        d_rho = lambda rho: (c - v * torch.sigmoid(b + rho[..., None])).sum(-1)  # noqa: E731
        lo = torch.full(v.shape[:2], -30.0, dtype=v.dtype)
        return _bisect(d_rho, lo, -lo).float()
    theta = torch.sigmoid(b)
    total = c.sum(-1)

    def d_gamma(g):
        return total / g - ((v - c) * theta / (1 - theta * g[..., None]).clamp_min(1e-12)).sum(-1)

    lo = torch.full(v.shape[:2], 1e-9, dtype=v.dtype)
    gamma = _bisect(d_gamma, lo, torch.ones_like(lo))
    return torch.where(total > 0, gamma, torch.zeros_like(gamma)).float()


@register_loss("two_tower")
class TwoTowerClickLoss(RankingLoss):
    target = "clicks"

    def __init__(self, form: str = "pbm", num_ranks: int = 50, lr: float = 0.05, learn_scale: bool = True,
                 bias_fit: str = "joint", bias_ema: float = 0.0, relevance: str = "likelihood",
                 max_weight: float = 100.0):
        super().__init__()
        if relevance not in RELEVANCE_OBJECTIVES:
            raise ValueError(f"relevance must be one of {', '.join(RELEVANCE_OBJECTIVES)}, got {relevance!r}")
        if relevance == "listwise" and bias_fit != "profile":
            # the listwise term holds the curve fixed: with a joint fit nothing would train the bias tower
            raise ValueError("relevance='listwise' needs bias_fit='profile' (the profile likelihood trains the curve)")
        if not float(max_weight) >= 1.0:
            raise ValueError(f"max_weight must be >= 1, got {max_weight}")
        self.relevance_objective = relevance
        self.max_weight = float(max_weight)
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
        if bias_fit not in BIAS_FITS:
            raise ValueError(f"bias_fit must be one of {', '.join(BIAS_FITS)}, got {bias_fit!r}")
        self.bias_fit = bias_fit
        if not 0.0 <= float(bias_ema) < 1.0:
            raise ValueError(f"bias_ema must be in [0, 1), got {bias_ema}")
        self.bias_ema = float(bias_ema)
        if int(num_ranks) < 1:
            raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
        self.form = form
        self.num_ranks = int(num_ranks)
        self.param_lr = float(lr)
        self.bias = nn.Parameter(torch.zeros(self.num_ranks))
        self.relevance = RelevanceCalibration(learn_scale)
        self.register_buffer("seen", torch.zeros(self.num_ranks))
        self.register_buffer("bias_avg", torch.zeros(self.num_ranks))  # EMA, before bias correction
        self.register_buffer("ema_steps", torch.zeros(()))

    def curve_logits(self) -> torch.Tensor:
        """The bias logits the model reports: the moving average when ``bias_ema`` > 0 (once
        trained), else the parameter itself."""
        if self.bias_ema > 0 and float(self.ema_steps) > 0:
            return self.bias_avg / (1.0 - self.bias_ema ** float(self.ema_steps))
        return self.bias.detach()

    @torch.no_grad()
    def _update_average(self) -> None:
        self.bias_avg.mul_(self.bias_ema).add_(self.bias.detach(), alpha=1.0 - self.bias_ema)
        self.ema_steps.add_(1.0)

    def click_log_probs(self, scores: torch.Tensor, depth: int, valid: torch.Tensor, detach_bias: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(click), log P(no click)), each ``[B, G, depth]``."""
        rel = self.relevance(as_float(scores), valid)[:, :, None]
        b = (self.curve_logits() if detach_bias else self.bias)[:depth][None, None, :]
        return self._log_probs(rel, b)

    def _log_probs(self, rel: torch.Tensor, b: torch.Tensor, gamma_given: bool = False):
        if self.form == "additive":
            z = rel + b
            return F.logsigmoid(z), F.logsigmoid(-z)
        log_rel = rel.clamp_min(1e-30).log() if gamma_given else F.logsigmoid(rel)
        log_p = F.logsigmoid(b) + log_rel
        return log_p, log1m_exp(log_p)

    def forward(self, scores, clicks, mask, weights=None, views=None):
        scores, views, clicks, cells, valid = count_inputs("two_tower", self.num_ranks, scores, clicks, mask, views)
        depth = views.shape[-1]
        profile = self.bias_fit == "profile"
        if self.bias_ema > 0 and self.training and torch.is_grad_enabled():
            self._update_average()
        with torch.no_grad():
            self.seen[:depth] += views.where(cells, torch.zeros_like(views)).sum((0, 1))
        if self.relevance_objective == "listwise":
            loss = self._listwise(scores, views, clicks, cells, valid)
        else:
            log_p, log_1mp = self.click_log_probs(scores, depth, valid, detach_bias=profile)
            loss = bernoulli_nll(log_p, log_1mp, views, clicks, cells)
        if profile:
            rel = profile_relevance(self.form, self.bias[:depth], views, clicks, cells)[:, :, None]
            bias_nll = bernoulli_nll(*self._log_probs(rel, self.bias[:depth][None, None, :], gamma_given=True),
                                     views, clicks, cells)
            loss = loss + (bias_nll - bias_nll.detach())
        return loss

    def corrected_click_rates(self, views: torch.Tensor, clicks: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``[B, G]``: sum_r C_r min(1/theta_r, max_weight) / sum_r V_r with the current (averaged) curve."""
        depth = views.shape[-1]
        theta = torch.sigmoid(self.curve_logits()[:depth].float())
        inverse = (theta[0] / theta).clamp(max=self.max_weight)[None, None, :]
        zero = torch.zeros_like(views)
        weighted = (clicks.where(cells, zero) * inverse).sum(-1)
        return weighted / views.where(cells, zero).sum(-1).clamp_min(1.0)

    def _listwise(self, scores, views, clicks, cells, valid):
        with torch.no_grad():
            rate = self.corrected_click_rates(views, clicks, cells).where(valid, torch.zeros_like(scores))
            total = rate.sum(-1, keepdim=True)
            target = rate / total.clamp_min(torch.finfo(rate.dtype).tiny)
        per_group = -(target * masked_log_softmax(scores, valid)).sum(-1)
        return mean_over(per_group, total.squeeze(-1) > 0)

    def forward_batch(self, scores, batch):
        views, clicks = click_counts(batch)
        return self(scores, clicks, batch.mask, None, views)

    def propensity(self) -> list[float]:
        """The learned curve relative to rank 1, over the ranks trained on."""
        k = seen_ranks(self.seen) or self.num_ranks
        b = self.curve_logits()[:k].double()
        if self.form == "additive":
            return torch.exp(b - b[0]).tolist()
        theta = torch.sigmoid(b)
        return (theta / theta[0]).tolist()

    def describe(self):
        k = seen_ranks(self.seen) or self.num_ranks
        return {"form": self.form, "bias_fit": self.bias_fit, "relevance": self.relevance_objective,
                "propensity": self.propensity(),
                "bias_logit": self.curve_logits()[:k].tolist(),
                "relevance_scale": float(self.relevance.log_scale.detach().exp()),
                "relevance_offset": float(self.relevance.offset.detach())}
