"""Agreement (values and gradients, 1e-5) with sentence-transformers' cross-encoder losses.

Their losses wrap a model; a fake CrossEncoder returns fixed logits for ("q", "b:g") pairs so
their own code (padding, sorting, masking, reduction) runs unchanged on our inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")
from sentence_transformers.cross_encoder import CrossEncoder  # noqa: E402

from rerankforge.losses import LOSSES  # noqa: E402

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: thread hand-offs cost more than the maths, badly so on a loaded CI box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeCrossEncoder(CrossEncoder):
    """Scores document "b:g" with logits[b, g]; skips CrossEncoder.__init__ (no weights, no hub)."""

    num_labels = 1
    device = torch.device("cpu")

    def __init__(self, logits: torch.Tensor):
        nn.Module.__init__(self)
        self.logits = logits

    def preprocess(self, pairs, prompt=None, task=None):
        return {"idx": torch.tensor([[int(x) for x in doc.split(":")] for _, doc in pairs])}

    def forward(self, tokens):
        idx = tokens["idx"]
        return {"scores": self.logits[idx[:, 0], idx[:, 1]]}


def ragged_batch(seed, sizes=(5, 3, 4, 2), graded=True, distinct_labels=False):
    g = torch.Generator().manual_seed(seed)
    B, G = len(sizes), max(sizes)
    scores = torch.randn(B, G, generator=g) * 2
    if distinct_labels:
        labels = torch.stack([torch.randperm(G, generator=g) for _ in range(B)]).float() * 0.7
    else:
        labels = torch.randint(0, 4 if graded else 2, (B, G), generator=g).float()
        labels[:, 0] = 1.0  # at least one positive everywhere; more may follow
    mask = torch.arange(G)[None, :] < torch.tensor(sizes)[:, None]
    return scores, labels, mask


def st_value_and_grad(loss_cls, scores, labels, mask, **kwargs):
    logits = scores.clone().requires_grad_()
    loss = loss_cls(FakeCrossEncoder(logits), **kwargs)
    sizes = mask.sum(-1).tolist()
    queries = [f"q{b}" for b in range(len(sizes))]
    docs = [[f"{b}:{g}" for g in range(n)] for b, n in enumerate(sizes)]
    value = loss([queries, docs], [labels[b, :n] for b, n in enumerate(sizes)])
    value.backward()
    return value.detach(), logits.grad


def ours_value_and_grad(name, scores, targets, mask, **params):
    s = scores.clone().requires_grad_()
    value = LOSSES[name](**params)(s, targets, mask)
    value.backward()
    return value.detach(), s.grad


def assert_agree(ours, theirs, mask):
    torch.testing.assert_close(ours[0], theirs[0], **TOL)
    torch.testing.assert_close(ours[1] * mask, theirs[1] * mask, **TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("log", ["natural", "binary"])
@pytest.mark.parametrize("k", [None, 2])
def test_ranknet_matches(seed, log, k):
    scores, labels, mask = ragged_batch(seed)
    theirs = st_value_and_grad(st_losses.RankNetLoss, scores, labels, mask, k=k, reduction_log=log)
    ours = ours_value_and_grad("ranknet", scores, labels, mask, k=k, reduction_log=log)
    assert_agree(ours, theirs, mask)


def test_ranknet_default_log_differs_deliberately():
    # documented: ours uses ln (the paper's formula), sentence-transformers log2 by default
    scores, labels, mask = ragged_batch(5)
    theirs = st_value_and_grad(st_losses.RankNetLoss, scores, labels, mask)
    ours = ours_value_and_grad("ranknet", scores, labels, mask)
    torch.testing.assert_close(ours[0], theirs[0] * torch.log(torch.tensor(2.0)), **TOL)


SCHEMES = {
    "ndcgloss2pp": lambda: st_losses.NDCGLoss2PPScheme(),
    "ndcgloss2": lambda: st_losses.NDCGLoss2Scheme(),
    "lambdarank": lambda: st_losses.LambdaRankScheme(),
    "ndcgloss1": lambda: st_losses.NDCGLoss1Scheme(),
    "none": lambda: st_losses.NoWeightingScheme(),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighting", sorted(SCHEMES))
@pytest.mark.parametrize("k", [None, 3])
def test_lambdaloss_matches(seed, weighting, k):
    scores, labels, mask = ragged_batch(seed, sizes=(6, 3, 5, 2, 6))
    theirs = st_value_and_grad(st_losses.LambdaLoss, scores, labels, mask, weighting_scheme=SCHEMES[weighting](), k=k)
    ours = ours_value_and_grad("lambdaloss", scores, labels, mask, weighting=weighting, k=k)
    assert_agree(ours, theirs, mask)


def test_lambdaloss_default_is_their_default():
    scores, labels, mask = ragged_batch(7)
    theirs = st_value_and_grad(st_losses.LambdaLoss, scores, labels, mask)
    ours = ours_value_and_grad("lambdaloss", scores, labels, mask)
    assert_agree(ours, theirs, mask)


def test_lambdaloss_mu_and_sigma():
    scores, labels, mask = ragged_batch(8)
    theirs = st_value_and_grad(st_losses.LambdaLoss, scores, labels, mask,
                               weighting_scheme=st_losses.NDCGLoss2PPScheme(mu=3.0), sigma=0.5,
                               reduction_log="natural")
    ours = ours_value_and_grad("lambdaloss", scores, labels, mask, mu=3.0, sigma=0.5, reduction_log="natural")
    assert_agree(ours, theirs, mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("graded", [True, False])
def test_listnet_matches(seed, graded):
    scores, labels, mask = ragged_batch(seed, graded=graded)
    theirs = st_value_and_grad(st_losses.ListNetLoss, scores, labels, mask)
    ours = ours_value_and_grad("listnet", scores, labels, mask)
    assert_agree(ours, theirs, mask)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", ["shuffle", "score"])
def test_listmle_matches_with_distinct_labels(seed, ties):
    scores, labels, mask = ragged_batch(seed, distinct_labels=True)
    theirs = st_value_and_grad(st_losses.ListMLELoss, scores, labels, mask, respect_input_order=False)
    ours = ours_value_and_grad("listmle", scores, labels, mask, ties=ties)
    assert_agree(ours, theirs, mask)


def test_listmle_matches_their_input_order_mode_on_sorted_input():
    scores, labels, mask = ragged_batch(3, distinct_labels=True)
    # sort each group by label so "respect_input_order" sees the label order
    key = torch.where(mask, labels, torch.full_like(labels, -1.0))
    order = key.argsort(-1, descending=True)
    scores, labels = scores.gather(-1, order), labels.gather(-1, order)
    theirs = st_value_and_grad(st_losses.ListMLELoss, scores, labels, mask)
    ours = ours_value_and_grad("listmle", scores, labels, mask)
    assert_agree(ours, theirs, mask)


def st_margin_mse(scores, teacher):
    """Their MarginMSELoss on columns (query, doc0, doc1, ...) with teacher scores per column."""
    B, G = scores.shape
    logits = scores.clone().requires_grad_()
    loss = st_losses.MarginMSELoss(FakeCrossEncoder(logits))
    columns = [[f"q{b}" for b in range(B)]] + [[f"{b}:{g}" for b in range(B)] for g in range(G)]
    value = loss(columns, teacher)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pairs", ["all", "anchor"])
def test_margin_mse_matches_on_two_candidates(seed, pairs):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(6, 2, generator=g) * 2
    teacher = torch.randn(6, 2, generator=g) * 3  # teacher sometimes prefers the second doc
    theirs = st_margin_mse(scores, teacher)
    ours = ours_value_and_grad("margin_mse", scores, teacher, torch.ones(6, 2, dtype=torch.bool), pairs=pairs)
    assert_agree(ours, theirs, torch.ones(6, 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_margin_mse_anchor_matches_multi_negative_form(seed):
    # positive first in their columns; the teacher ranks it top, so our anchor is the positive
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(5, 4, generator=g)
    teacher = torch.randn(5, 4, generator=g)
    teacher[:, 0] = teacher.amax(-1) + 1.0
    theirs = st_margin_mse(scores, teacher)
    # we never assume where the positive is: shuffle our copy of the candidates
    perm = torch.stack([torch.randperm(4, generator=g) for _ in range(5)])
    ours = ours_value_and_grad("margin_mse", scores.gather(1, perm), teacher.gather(1, perm),
                               torch.ones(5, 4, dtype=torch.bool), pairs="anchor")
    unperm_grad = torch.zeros_like(ours[1]).scatter(1, perm, ours[1])
    assert_agree((ours[0], unperm_grad), theirs, torch.ones(5, 4))


def flatten(scores, targets, mask):
    return scores[mask], targets[mask]


def test_bce_matches_flattened_pairs():
    scores, labels, mask = ragged_batch(4, graded=False)
    logits = scores.clone().requires_grad_()
    loss = st_losses.BinaryCrossEntropyLoss(FakeCrossEncoder(logits))
    idx = mask.nonzero()
    value = loss([["q"] * len(idx), [f"{b}:{g}" for b, g in idx.tolist()]], labels[mask])
    value.backward()
    ours = ours_value_and_grad("bce", scores, labels, mask)
    assert_agree(ours, (value.detach(), logits.grad), mask)


def test_mse_matches_flattened_pairs():
    scores, _, mask = ragged_batch(6)
    teacher = torch.randn(scores.shape, generator=torch.Generator().manual_seed(9))
    logits = scores.clone().requires_grad_()
    loss = st_losses.MSELoss(FakeCrossEncoder(logits))
    idx = mask.nonzero()
    value = loss([["q"] * len(idx), [f"{b}:{g}" for b, g in idx.tolist()]], teacher[mask])
    value.backward()
    ours = ours_value_and_grad("mse", scores, teacher, mask)
    assert_agree(ours, (value.detach(), logits.grad), mask)
