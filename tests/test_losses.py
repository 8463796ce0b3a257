"""Ranking losses: hand-computed values, gradients, order/padding invariance, weights, config.

Agreement with sentence-transformers' cross-encoder losses is in tests/test_losses_st.py."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rerankforge.data.dataset import GroupBatch
from rerankforge.errors import ConfigError
from rerankforge.losses import LOSSES, build_loss

NAN = float("nan")
TEACHER_LOSSES = {"mse", "kl", "margin_mse"}
#: learned-bias losses read per-rank view/click counts (tests/test_click_losses.py)
CLICK_LOSSES = {"two_tower", "dla", "trust_bias"}
ALL = sorted(LOSSES)

# One instance per configuration worth checking for the generic properties below.
CONFIGS = [
    ("bce", {}), ("bce", {"max_label": 2.0, "pos_weight": 3.0}),
    ("mse", {}),
    ("ranknet", {}), ("ranknet", {"k": 2, "sigma": 2.0, "reduction_log": "binary"}),
    ("hinge", {}), ("hinge", {"margin": 0.3}),
    ("listwise_ce", {}),
    ("listnet", {}), ("listnet", {"temperature": 0.5, "label_temperature": 0.3}),
    ("listmle", {}), ("listmle", {"ties": "score"}),
    ("lambdaloss", {}), ("lambdaloss", {"weighting": "ndcgloss2", "k": 3}), ("lambdaloss", {"weighting": "lambdarank"}),
    ("lambdaloss", {"weighting": "ndcgloss1"}), ("lambdaloss", {"weighting": "none", "reduction_log": "natural"}),
    ("kl", {}), ("kl", {"temperature": 3.0}),
    ("margin_mse", {}), ("margin_mse", {"pairs": "anchor"}),
]
CONFIG_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for n, p in CONFIGS]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: thread hand-offs cost more than the maths, badly so on a loaded CI box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name, **params):
    return LOSSES[name](**params)


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


def full_mask(x):
    return torch.ones(x.shape, dtype=torch.bool)


def random_batch(seed=0, B=4, G=6, dtype=torch.float64):
    """Graded labels with ties and several positives, ragged groups, a missing teacher score,
    a group without any positive, non-uniform weights."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, G, generator=g, dtype=dtype) * 1.5
    labels = torch.randint(0, 3, (B, G), generator=g).to(dtype)
    labels[0, :3] = torch.tensor([2.0, 1.0, 1.0], dtype=dtype)
    labels[B - 1] = 0.0  # no positive
    teacher = torch.randn(B, G, generator=g, dtype=dtype) * 2
    teacher[0, 1] = NAN
    weights = torch.rand(B, G, generator=g, dtype=dtype) + 0.5
    mask = torch.ones(B, G, dtype=torch.bool)
    mask[1, G - 2:] = False
    mask[2, G - 1:] = False
    weights = weights * mask
    return scores, labels, teacher, weights, mask


def targets_for(name, labels, teacher):
    return teacher if LOSSES[name].target == "teacher" else labels


# ----------------------------------------------------------------------------- registry & docs


def test_registry_and_targets():
    expected = {"bce", "mse", "ranknet", "hinge", "listwise_ce", "listnet", "listmle", "lambdaloss", "kl", "margin_mse"}
    assert expected <= set(LOSSES)
    for name, cls in LOSSES.items():
        assert cls.name == name
        expected_target = "teacher" if name in TEACHER_LOSSES else "clicks" if name in CLICK_LOSSES else "labels"
        assert cls.target == expected_target, name


@pytest.mark.parametrize("name", ALL)
def test_each_loss_documents_formula_and_paper(name):
    import sys

    doc = sys.modules[LOSSES[name].__module__].__doc__ or ""
    assert "L =" in doc or "L  =" in doc or "L   =" in doc, f"{name}: no formula in module docstring"
    assert any(str(year) in doc for year in range(1995, 2030)), f"{name}: no paper reference"


# ----------------------------------------------------------------------------- hand-computed values


def lsig(x):  # log σ(x)
    return -math.log1p(math.exp(-x))


def test_bce_by_hand():
    loss = make("bce")
    v = loss(t([[0.0, 2.0]]), t([[1.0, 0.0]]), full_mask(t([[0, 0]])))
    assert v.item() == pytest.approx((math.log(2) + math.log1p(math.exp(2))) / 2, rel=1e-12)
    # graded labels 2, 1, 0 with max_label=2 -> targets 1, 0.5, 0
    s = [1.0, -1.0, 0.5]
    y = [1.0, 0.5, 0.0]
    want = sum(-(yi * lsig(si) + (1 - yi) * lsig(-si)) for si, yi in zip(s, y)) / 3
    v = make("bce", max_label=2.0)(t([s]), t([[2.0, 1.0, 0.0]]), full_mask(t([s])))
    assert v.item() == pytest.approx(want, rel=1e-12)
    # pos_weight scales the positive part; per-candidate weights scale each term (mean over count)
    want = (-3.0 * 1.0 * lsig(1.0) + 2.0 * -lsig(1.0)) / 2  # candidate 2: label 0, score -1 -> -log σ(1)
    v = make("bce", pos_weight=3.0)(t([[1.0, -1.0]]), t([[1.0, 0.0]]), full_mask(t([[0, 0]])), t([[1.0, 2.0]]))
    assert v.item() == pytest.approx(want, rel=1e-12)


def test_mse_by_hand_and_missing_teacher():
    loss = make("mse")
    assert loss(t([[1.0, 2.0]]), t([[0.0, 4.0]]), full_mask(t([[0, 0]]))).item() == pytest.approx(2.5)
    # a NaN teacher score means "missing": that candidate is left out
    s = t([[1.0, 2.0, 9.0]]).requires_grad_()
    v = loss(s, t([[0.0, 4.0, NAN]]), full_mask(s))
    v.backward()
    assert v.item() == pytest.approx(2.5)
    assert s.grad[0, 2].item() == 0.0


def test_ranknet_by_hand_multiple_positives():
    # two positives, two negatives -> 4 pairs; plus one graded pair between the positives
    s = [2.0, 0.5, 1.0, -1.0]
    y = [2.0, 1.0, 0.0, 0.0]
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    want = sum(-lsig(s[i] - s[j]) for i, j in pairs) / len(pairs)
    assert make("ranknet")(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx(want, rel=1e-12)
    # binary log and sigma
    want2 = sum(-lsig(2 * (s[i] - s[j])) for i, j in pairs) / len(pairs) / math.log(2)
    got2 = make("ranknet", sigma=2.0, reduction_log="binary")(t([s]), t([y]), full_mask(t([s])))
    assert got2.item() == pytest.approx(want2, rel=1e-12)
    # k=1: only pairs touching the model's top-1 (candidate 0)
    want3 = sum(-lsig(s[i] - s[j]) for i, j in pairs if 0 in (i, j)) / 3
    assert make("ranknet", k=1)(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx(want3, rel=1e-12)
    # weights: each pair weighted by its more relevant item
    w = [3.0, 0.5, 7.0, 7.0]
    want4 = sum(w[i] * -lsig(s[i] - s[j]) for i, j in pairs) / len(pairs)
    assert make("ranknet")(t([s]), t([y]), full_mask(t([s])), t([w])).item() == pytest.approx(want4, rel=1e-12)


def test_hinge_by_hand():
    s, y = [1.0, 0.5, 2.0], [1.0, 0.0, 0.0]
    assert make("hinge")(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx((0.5 + 2.0) / 2)
    assert make("hinge", margin=0.2)(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx((0.0 + 1.2) / 2)


def test_listwise_ce_by_hand():
    s = [0.0, math.log(3.0), 1.0]
    y = [1.0, 2.0, 0.0]  # gains 1, 3, 0 -> targets 1/4, 3/4
    z = math.log(1 + 3 + math.e)
    want = -(0.25 * (0 - z) + 0.75 * (math.log(3) - z))
    assert make("listwise_ce")(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx(want, rel=1e-12)


def test_listnet_by_hand():
    s, y = [0.0, math.log(3.0)], [1.0, 0.0]  # q = (1/4, 3/4)
    p0 = math.e / (math.e + 1)
    want = -(p0 * math.log(0.25) + (1 - p0) * math.log(0.75))
    assert make("listnet")(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx(want, rel=1e-12)
    # label temperature 0.5 doubles the label logits; score temperature 2 halves the score logits
    p0 = math.exp(2) / (math.exp(2) + 1)
    q = torch.softmax(t([0.0, math.log(3.0) / 2]), -1)
    want = -(p0 * math.log(q[0]) + (1 - p0) * math.log(q[1]))
    got = make("listnet", temperature=2.0, label_temperature=0.5)(t([s]), t([y]), full_mask(t([s])))
    assert got.item() == pytest.approx(want, rel=1e-12)
    # weights scale target probabilities: w = (1, e) on labels (1, 0) gives a uniform target
    got = make("listnet")(t([s]), t([y]), full_mask(t([s])), t([[1.0, math.e]]))
    assert got.item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-12)


def test_listmle_by_hand():
    s = [0.3, -0.2, 1.1]
    y = [0.0, 2.0, 1.0]  # label order: 1, 2, 0

    def lse(*xs):
        return math.log(sum(math.exp(x) for x in xs))

    want = -((s[1] - lse(s[1], s[2], s[0])) + (s[2] - lse(s[2], s[0])) + 0.0)
    assert make("listmle")(t([s]), t([y]), full_mask(t([s]))).item() == pytest.approx(want, rel=1e-12)
    w = [2.0, 3.0, 0.5]
    want_w = -(3.0 * (s[1] - lse(s[1], s[2], s[0])) + 0.5 * (s[2] - lse(s[2], s[0])))
    got = make("listmle")(t([s]), t([y]), full_mask(t([s])), t([w]))
    assert got.item() == pytest.approx(want_w, rel=1e-12)
    # ties="score": tied labels (0, 0) ordered by descending score
    y_tie = [1.0, 0.0, 0.0]  # order 0, then 2 (score 1.1) before 1 (score -0.2)
    want_t = -((s[0] - lse(s[0], s[2], s[1])) + (s[2] - lse(s[2], s[1])))
    got = make("listmle", ties="score")(t([s]), t([y_tie]), full_mask(t([s])))
    assert got.item() == pytest.approx(want_t, rel=1e-12)


def test_listmle_shuffle_ties_are_a_valid_label_order():
    # Whatever the tie order, the loss is the likelihood of *some* label-consistent permutation.
    import itertools

    s = [0.3, -0.2, 1.1, 0.4]
    y = [1.0, 0.0, 0.0, 0.0]
    got = make("listmle")(t([s]), t([y]), full_mask(t([s]))).item()

    def nll(perm):
        xs = [s[i] for i in perm]
        return -sum(xs[k] - math.log(sum(math.exp(x) for x in xs[k:])) for k in range(len(xs)))

    candidates = [nll((0,) + rest) for rest in itertools.permutations((1, 2, 3))]
    assert any(got == pytest.approx(c, rel=1e-12) for c in candidates)


def test_lambdaloss_by_hand():
    # Model ranks the negative first: s = (0, 1), y = (1, 0). maxDCG = 1, gains (1, 0), one pair.
    s, y = [0.0, 1.0], [1.0, 0.0]
    x = 1.0 - 1.0 / math.log2(3.0)  # |1/D(1) - 1/D(2)|, same for NDCGLoss2 (gap 1) and LambdaRank
    pair = math.log2(1 + math.e)  # -log2 σ(0 - 1)
    m = full_mask(t([s]))
    assert make("lambdaloss")(t([s]), t([y]), m).item() == pytest.approx((10 + 1) * x * pair, rel=1e-12)
    assert make("lambdaloss", weighting="ndcgloss2")(t([s]), t([y]), m).item() == pytest.approx(x * pair, rel=1e-12)
    assert make("lambdaloss", weighting="lambdarank")(t([s]), t([y]), m).item() == pytest.approx(x * pair, rel=1e-12)
    assert make("lambdaloss", weighting="none")(t([s]), t([y]), m).item() == pytest.approx(pair, rel=1e-12)
    # NDCGLoss1: all 4 ordered pairs incl. i = j; weight G_i / D(r_i) -> only the label-1 item
    # (rank 2, D = log2 3) contributes, as pair (itself, itself) and (itself, the other).
    g = 1.0 / math.log2(3.0)
    want1 = g * (-math.log2(0.5) + pair) / 4
    assert make("lambdaloss", weighting="ndcgloss1")(t([s]), t([y]), m).item() == pytest.approx(want1, rel=1e-12)


def test_kl_by_hand():
    s, tt = [0.0, 0.0], [0.0, math.log(3.0)]  # p = (1/4, 3/4), q = (1/2, 1/2)
    want = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    m = full_mask(t([s]))
    assert make("kl")(t([s]), t([tt]), m).item() == pytest.approx(want, rel=1e-12)
    r3 = math.sqrt(3.0)
    p = [1 / (1 + r3), r3 / (1 + r3)]
    want_t = 4.0 * sum(pi * math.log(pi / 0.5) for pi in p)
    assert make("kl", temperature=2.0)(t([s]), t([tt]), m).item() == pytest.approx(want_t, rel=1e-12)
    # a perfect student has zero loss and zero gradient
    s2 = t([tt]).requires_grad_()
    v = make("kl", temperature=2.0)(s2, t([tt]), m)
    v.backward()
    assert v.item() == pytest.approx(0.0, abs=1e-14)
    assert s2.grad.abs().max().item() < 1e-12


def test_margin_mse_by_hand():
    s, tt = [1.0, 0.0, 3.0], [2.0, 0.0, 1.0]  # d = s - t = (-1, 0, 2)
    m = full_mask(t([s]))
    assert make("margin_mse")(t([s]), t([tt]), m).item() == pytest.approx((1 + 9 + 4) / 3)
    assert make("margin_mse", pairs="anchor")(t([s]), t([tt]), m).item() == pytest.approx((1 + 9) / 2)
    # adding the same constant to every student score changes nothing (margins only)
    assert make("margin_mse")(t([s]) + 5, t([tt]), m).item() == pytest.approx((1 + 9 + 4) / 3)
    # weights: pair weighted by its teacher-preferred item; (0,1) -> w0, (0,2) -> w0, (1,2) -> w2
    w = [2.0, 5.0, 3.0]
    want = (2 * 1 + 2 * 9 + 3 * 4) / 3
    assert make("margin_mse")(t([s]), t([tt]), m, t([w])).item() == pytest.approx(want)


# ----------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_gradcheck(name, params):
    scores, labels, teacher, weights, mask = random_batch(seed=1)
    if name == "listmle" and params.get("ties", "shuffle") == "shuffle":
        # the hash tie-break is piecewise constant in the scores: use distinct labels
        labels = torch.arange(scores.shape[1], dtype=scores.dtype).repeat(scores.shape[0], 1) % 5
        labels = labels + torch.arange(scores.shape[0], dtype=scores.dtype)[:, None] * 0.1 * labels
        labels[:, 5] = 5.0
    targets = targets_for(name, labels, teacher)
    loss = make(name, **params)
    s = scores.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, targets, mask, weights), (s,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_candidate_order_invariance(name, params):
    scores, labels, teacher, weights, mask = random_batch(seed=2)
    targets = targets_for(name, labels, teacher)
    loss = make(name, **params)
    s = scores.clone().requires_grad_()
    v = loss(s, targets, mask, weights)
    v.backward()
    g = torch.Generator().manual_seed(3)
    perm = torch.stack([torch.randperm(scores.shape[1], generator=g) for _ in range(scores.shape[0])])
    take = lambda x: x.gather(1, perm)  # noqa: E731
    sp = take(scores).requires_grad_()
    vp = loss(sp, take(targets), take(mask), take(weights))
    vp.backward()
    torch.testing.assert_close(vp, v, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(sp.grad, take(s.grad), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_padding_invariance(name, params):
    scores, labels, teacher, weights, mask = random_batch(seed=4)
    targets = targets_for(name, labels, teacher)
    loss = make(name, **params)
    s = scores.clone().requires_grad_()
    v = loss(s, targets, mask, weights)
    v.backward()

    B = scores.shape[0]
    # Garbage in the padded slots: huge/NaN/inf scores, "relevant" labels, wild teacher and weights.
    pad_s = torch.tensor([1e6, NAN, float("inf"), -float("inf")], dtype=scores.dtype).repeat(B, 1)
    pad_t = torch.tensor([5.0, 100.0, NAN, -3.0], dtype=scores.dtype).repeat(B, 1)
    pad_w = torch.full((B, 4), 7.0, dtype=scores.dtype)
    sp = torch.cat([scores, pad_s], 1).requires_grad_()
    vp = loss(sp, torch.cat([targets, pad_t], 1), torch.cat([mask, torch.zeros(B, 4, dtype=torch.bool)], 1),
              torch.cat([weights, pad_w], 1))
    vp.backward()
    torch.testing.assert_close(vp, v, atol=1e-12, rtol=1e-12)
    assert torch.all(sp.grad[:, -4:] == 0)
    G = scores.shape[1]
    # slots already masked inside the original batch get no gradient either
    assert torch.all(sp.grad[:, :G][~mask] == 0)
    torch.testing.assert_close(sp.grad[:, :G], s.grad, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_low_precision_and_no_weights(name, params):
    scores, labels, teacher, weights, mask = random_batch(seed=5, dtype=torch.float32)
    targets = targets_for(name, labels, teacher)
    loss = make(name, **params)
    s = scores.to(torch.bfloat16).requires_grad_()
    v = loss(s, targets, mask)
    assert v.dtype == torch.float32 and torch.isfinite(v)
    v.backward()
    assert torch.isfinite(s.grad.float()).all()


@pytest.mark.parametrize("name,params", [c for c in CONFIGS if c[0] not in TEACHER_LOSSES],
                         ids=[i for i, c in zip(CONFIG_IDS, CONFIGS) if c[0] not in TEACHER_LOSSES])
def test_batch_without_positives(name, params):
    scores, _, _, weights, mask = random_batch(seed=6)
    labels = torch.zeros_like(scores)
    loss = make(name, **params)
    s = scores.clone().requires_grad_()
    v = loss(s, labels, mask, weights)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(s.grad).all()
    if name in ("ranknet", "hinge", "lambdaloss", "listwise_ce") and params.get("weighting") != "ndcgloss1":
        # nothing to learn: exact zero, still attached to the graph, zero gradient
        assert v.item() == 0.0 and v.requires_grad
        assert torch.all(s.grad == 0)


@pytest.mark.parametrize("name", ["ranknet", "hinge", "lambdaloss", "listwise_ce"])
def test_group_without_positive_adds_nothing(name):
    scores, labels, _, weights, mask = random_batch(seed=7)
    loss = make(name)
    keep = labels.amax(-1) > 0
    assert not keep.all()
    full = loss(scores, labels, mask, weights)
    only = loss(scores[keep], labels[keep], mask[keep], weights[keep])
    torch.testing.assert_close(full, only, atol=1e-12, rtol=1e-12)


def test_listnet_and_listmle_keep_groups_without_positive():
    # Documented: uniform / all-tie targets still count (as in sentence-transformers).
    s = t([[0.0, 2.0], [1.0, -1.0]])
    y = t([[1.0, 0.0], [0.0, 0.0]])
    m = full_mask(s)
    listnet = make("listnet")
    single = listnet(s[:1], y[:1], m[:1])
    uniform = -(0.5 * torch.log_softmax(s[1], -1)).sum()
    assert listnet(s, y, m).item() == pytest.approx(((single + uniform) / 2).item(), rel=1e-12)


def test_teacher_losses_missing_everywhere_give_attached_zero():
    scores, _, _, weights, mask = random_batch(seed=8)
    teacher = torch.full_like(scores, NAN)
    for name in TEACHER_LOSSES:
        s = scores.clone().requires_grad_()
        v = make(name)(s, teacher, mask, weights)
        v.backward()
        assert v.item() == 0.0 and torch.all(s.grad == 0), name


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name", ["bce", "mse", "ranknet", "hinge", "lambdaloss", "margin_mse"])
def test_term_weighted_losses_scale_with_uniform_weights(name):
    scores, labels, teacher, _, mask = random_batch(seed=9)
    targets = targets_for(name, labels, teacher)
    loss = make(name)
    base = loss(scores, targets, mask)
    torch.testing.assert_close(loss(scores, targets, mask, 2.5 * mask.double()), 2.5 * base)


@pytest.mark.parametrize("name", ["listnet", "kl", "listwise_ce"])
def test_target_weighted_losses_ignore_uniform_weights(name):
    scores, labels, teacher, _, mask = random_batch(seed=10)
    targets = targets_for(name, labels, teacher)
    loss = make(name)
    torch.testing.assert_close(loss(scores, targets, mask, 2.5 * mask.double()), loss(scores, targets, mask))


def test_pointwise_weights_are_per_candidate():
    s, y = t([[1.0, -2.0, 0.5]]), t([[1.0, 0.0, 0.0]])
    m = full_mask(s)
    per = torch.nn.functional.binary_cross_entropy_with_logits(s, y, reduction="none")[0]
    w = t([[0.0, 2.0, 1.0]])
    want = (2.0 * per[1] + per[2]) / 3
    assert make("bce")(s, y, m, w).item() == pytest.approx(want.item(), rel=1e-12)


def test_pairwise_weights_use_more_relevant_item():
    s, y = t([[0.2, 1.0, -0.3]]), t([[1.0, 0.0, 0.0]])
    m = full_mask(s)
    loss = make("hinge")
    # changing the weight of a less relevant item changes nothing
    a = loss(s, y, m, t([[2.0, 1.0, 1.0]]))
    b = loss(s, y, m, t([[2.0, 9.0, 0.0]]))
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    assert a.item() == pytest.approx(2 * loss(s, y, m).item(), rel=1e-12)


# ----------------------------------------------------------------------------- performance


def graph_size(value: torch.Tensor) -> int:
    seen, stack = set(), [value.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_vectorised_graph_does_not_grow_with_group_or_batch_size(name, params):
    # A Python loop over candidates (or groups) adds autograd nodes per iteration.
    sizes = {}
    for B, G in [(2, 4), (2, 64), (16, 64)]:
        g = torch.Generator().manual_seed(B * 1000 + G)
        scores = torch.randn(B, G, generator=g, requires_grad=True)
        labels = torch.randint(0, 4, (B, G), generator=g).float()
        teacher = torch.randn(B, G, generator=g)
        mask = torch.rand(B, G, generator=g) > 0.2
        mask[:, :2] = True
        sizes[(B, G)] = graph_size(make(name, **params)(scores, targets_for(name, labels, teacher), mask,
                                                        torch.rand(B, G, generator=g)))
    assert len(set(sizes.values())) == 1, sizes


# ----------------------------------------------------------------------------- end to end


def pairwise_accuracy(scores, truth, mask):
    pairs = (truth[:, :, None] > truth[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    right = (scores[:, :, None] > scores[:, None, :]) & pairs
    return (right.sum() / pairs.sum()).item()


@pytest.mark.parametrize("name,params", CONFIGS, ids=CONFIG_IDS)
def test_each_loss_trains_a_linear_ranker(name, params):
    """Sign and scale sanity: every loss teaches a linear scorer the hidden ranking."""
    g = torch.Generator().manual_seed(0)
    D, B, G = 8, 32, 8
    true_w = torch.randn(D, generator=g)

    def batch():
        x = torch.randn(B, G, D, generator=g)
        truth = x @ true_w
        labels = torch.bucketize(truth, torch.tensor([0.0, 1.5, 3.0]))  # graded 0..3, ties, many positives
        mask = torch.rand(B, G, generator=g) > 0.2
        mask[:, :2] = True
        return x, truth, labels.float(), mask

    model = torch.nn.Linear(D, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = make(name, **params)
    for _ in range(80):
        x, truth, labels, mask = batch()
        loss = loss_fn(model(x).squeeze(-1), truth if loss_fn.target == "teacher" else labels, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, truth, labels, mask = batch()
    with torch.no_grad():
        acc = pairwise_accuracy(model(x).squeeze(-1), truth, mask)
    assert acc > 0.85, acc


# ----------------------------------------------------------------------------- config / weighted sum


def make_batch(scores_like, labels, teacher, mask, weights):
    B, G = labels.shape
    return GroupBatch(query_ids=[f"q{b}" for b in range(B)], doc_ids=[[f"d{g}" for g in range(G)]] * B, features={},
                      mask=mask, labels=labels, teacher=teacher, weights=weights,
                      first_stage=torch.full_like(labels, NAN))


def test_build_loss_weighted_sum_reads_each_target():
    scores, labels, teacher, weights, mask = random_batch(seed=11, dtype=torch.float32)
    spec = [{"name": "listwise_ce", "weight": 1.0}, {"name": "kl", "weight": 0.5, "temperature": 2.0},
            {"name": "kl", "params": {"temperature": 4.0}, "weight": 0.25}]
    loss = build_loss(spec)
    assert loss.targets == ["labels", "teacher"]
    total, parts = loss.forward_batch(scores, make_batch(scores, labels, teacher, mask, weights))
    assert set(parts) == {"listwise_ce", "kl", "kl#2"}
    want = (make("listwise_ce")(scores, labels, mask, weights) + 0.5 * make("kl", temperature=2.0)(
        scores, teacher, mask, weights) + 0.25 * make("kl", temperature=4.0)(scores, teacher, mask, weights))
    torch.testing.assert_close(total, want)
    assert parts["kl#2"] == pytest.approx(make("kl", temperature=4.0)(scores, teacher, mask, weights).item(), rel=1e-6)


def test_weighted_sum_plain_forward():
    scores, labels, teacher, weights, mask = random_batch(seed=13)
    same = build_loss([{"name": "ranknet", "weight": 0.5}, {"name": "listnet"}])
    assert same.target == "labels"
    want = 0.5 * make("ranknet")(scores, labels, mask, weights) + make("listnet")(scores, labels, mask, weights)
    torch.testing.assert_close(same(scores, labels, mask, weights), want)
    with pytest.raises(TypeError, match="forward_batch"):
        build_loss(["ranknet", "kl"])(scores, labels, mask)


def test_build_loss_accepts_omegaconf_and_plain_names():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"loss": [{"name": "ranknet", "weight": 2, "sigma": 0.5}, {"name": "bce"}]})
    loss = build_loss(cfg.loss)
    assert [type(x).name for x in loss.terms] == ["ranknet", "bce"]
    assert loss.weights == [2.0, 1.0] and loss.terms[0].sigma == 0.5
    assert [type(x).name for x in build_loss("listnet").terms] == ["listnet"]
    assert len(build_loss(OmegaConf.create({"name": "kl"})).terms) == 1


@pytest.mark.parametrize("spec,needle", [
    ({"name": "nope"}, "unknown loss 'nope'"),
    ({"name": "kl", "temprature": 2}, "temprature"),
    ({"name": "kl", "temperature": -1}, "temperature"),
    ({"name": "listmle", "ties": "coin"}, "ties"),
    ({"name": "lambdaloss", "weighting": "ndcg"}, "weighting"),
    ({"name": "ranknet", "k": 0}, "k must be"),
    ({"name": "bce", "weight": "heavy"}, "weight must be a number"),
    ({"weight": 1.0}, "needs a 'name'"),
    ([], "no loss configured"),
])
def test_build_loss_errors(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        build_loss(spec)


def test_unknown_param_error_lists_accepted():
    with pytest.raises(ConfigError, match="accepted: temperature, label_temperature"):
        build_loss({"name": "listnet", "tau": 1})


def test_weighted_sum_warns_when_target_field_is_empty():
    scores, labels, _, weights, mask = random_batch(seed=12, dtype=torch.float32)
    teacher = torch.full_like(scores, NAN)
    loss = build_loss([{"name": "listwise_ce"}, {"name": "margin_mse"}])
    batch = make_batch(scores, labels, teacher, mask, weights)
    with pytest.warns(UserWarning, match="margin_mse.*teacher"):
        total, parts = loss.forward_batch(scores.requires_grad_(), batch)
    assert parts["margin_mse"] == 0.0
    total.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not every step
        loss.forward_batch(scores, batch)


@pytest.mark.parametrize("spec", [{"name": "kl", "temperature": 0.0}, {"name": "listwise_ce", "temperature": -1.0},
                                  {"name": "listnet", "label_temperature": 0.0}])
def test_non_positive_temperature_is_rejected(spec):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_loss([spec])
