"""ListMLE: negative Plackett-Luce log-likelihood of the label order.

    π = candidates sorted by label, descending
    L = mean over groups of  - sum_k w_π(k) * ( s_π(k) - log sum_{m >= k} exp(s_π(m)) )

(Xia et al., ICML 2008, "Listwise Approach to Learning to Rank: Theory and Algorithm"), over the
real candidates of each group. ``weights`` scale each position's term (the term of the item
placed at that position); uniform weights of 1 give the plain likelihood.

Ties. Equal labels leave π undetermined, and the likelihood depends on how ties are ordered.
``ties="shuffle"`` (default) orders tied candidates by a pseudo-random hash of their current
score: like the random tie-breaking of allRank and TF-Ranking it is uncorrelated with the score
order (so, in expectation, tied candidates are pulled together rather than apart), but it is a
deterministic function of the inputs, so the loss is exactly invariant to candidate order and
padding. It is piecewise constant in the scores, so finite-difference checks need distinct
labels. ``ties="score"`` orders tied candidates by descending score (the most likely consistent
permutation; deterministic and smooth between score swaps, but it rewards spreading tied
candidates apart).

Matches sentence-transformers' ``ListMLELoss`` with ``respect_input_order=False`` (sort by
labels) when labels are distinct; its default ``respect_input_order=True`` trusts the input
order, which rerankforge never does (the positive need not come first).
"""

from __future__ import annotations

import torch

from rerankforge.losses.base import RankingLoss, candidate_weights, mean_over, prepare, register_loss

TIES = ("shuffle", "score")


def _hash01(x: torch.Tensor) -> torch.Tensor:
    # The classic sin-fract hash, in float64 so nearby scores still land far apart.
    return torch.frac(torch.sin(x.detach().double() * 12.9898 + 78.233) * 43758.5453)


@register_loss("listmle")
class ListMLE(RankingLoss):
    target = "labels"

    def __init__(self, ties: str = "shuffle"):
        super().__init__()
        if ties not in TIES:
            raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
        self.ties = ties

    def forward(self, scores, targets, mask, weights=None):
        s, y, valid = prepare(scores, targets, mask)
        w = candidate_weights(weights, valid, s.dtype)
        # Lexicographic sort (label desc, then tie key desc) as two stable sorts: minor key first.
        tie_key = _hash01(s) if self.ties == "shuffle" else s.detach()
        by_tie = tie_key.argsort(dim=-1, descending=True, stable=True)
        label_key = torch.where(valid, y, torch.full_like(y, float("-inf"))).gather(-1, by_tie)
        order = by_tie.gather(-1, label_key.argsort(dim=-1, descending=True, stable=True))

        s_o, v_o, w_o = s.gather(-1, order), valid.gather(-1, order), w.gather(-1, order)
        filled = torch.where(v_o, s_o, torch.full_like(s_o, torch.finfo(s_o.dtype).min))
        # log sum_{m >= k} exp(s_m): reverse cumulative logsumexp; padded slots sit at the end.
        log_norm = filled.flip(-1).logcumsumexp(dim=-1).flip(-1)
        log_lik = torch.where(v_o, s_o - log_norm, torch.zeros_like(s_o))
        per_group = -(w_o * log_lik).sum(-1)
        return mean_over(per_group, valid.any(-1))
