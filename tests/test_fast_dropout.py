"""Fast CPU dropout (rerankforge/models/fast_dropout.py): the same dropout, drawn faster.

Checked: the drop rate and the 1/(1-p) scale, the gradient, seeding through torch's generator,
attention with dropout equal to Hugging Face's eager definition under the same mask, the fused
``sdpa`` path kept where no dropout is drawn, and a swapped model that saves and scores as before.
The exact-resume test of tests/test_trainer.py trains with dropout on, so it runs through this too.
"""

from __future__ import annotations

import json
import math

import torch
from torch import nn

from rerankforge.models import fast_dropout as fd


def test_drop_rate_and_scale():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = fd.fast_dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    sigma = math.sqrt(0.1 * 0.9 / x.numel())
    assert abs(dropped - 0.1) < 5 * sigma, dropped
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    # the 16-bit threshold keeps the rate to within 1/65536 at any p
    for p in (0.05, 0.3, 0.5):
        frac = (fd._drop_mask(torch.Size([300_000]), p)).float().mean().item()
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / 300_000), (p, frac)


def test_masks_follow_torch_seed_and_differ_between_calls():
    x = torch.randn(64, 64)
    torch.manual_seed(3)
    a, b = fd.fast_dropout(x, 0.2), fd.fast_dropout(x, 0.2)
    torch.manual_seed(3)
    a2 = fd.fast_dropout(x, 0.2)
    assert torch.equal(a, a2)
    assert not torch.equal(a == 0, b == 0)


def test_gradient_is_mask_times_scale():
    torch.manual_seed(0)
    x = torch.randn(50, 40, requires_grad=True)
    y = fd.fast_dropout(x, 0.25)
    g = torch.randn_like(y)
    y.backward(g)
    keep = (y != 0).float()
    torch.testing.assert_close(x.grad, g * keep / 0.75)


def test_identity_when_not_training_or_p_zero():
    x = torch.randn(8, 8)
    assert fd.fast_dropout(x, 0.3, training=False) is x
    assert fd.fast_dropout(x, 0.0) is x
    layer = fd.FastDropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert isinstance(layer, nn.Dropout)  # set_attention_dropout and friends still see a Dropout


class _Attn(nn.Module):
    training = True


def _eager(q, k, v, mask_bool, drop, p):
    """Hugging Face's eager attention with a given drop mask (float32 reference)."""
    w = torch.matmul(q, k.transpose(2, 3)) * q.size(-1) ** -0.5
    w = w.masked_fill(~mask_bool, torch.finfo(w.dtype).min)
    w = torch.softmax(w, dim=-1)
    w = w.masked_fill(drop, 0.0) / (1 - p)
    return torch.matmul(w, v).transpose(1, 2)


def test_attention_with_dropout_equals_eager_definition(monkeypatch):
    torch.manual_seed(0)
    B, H, L, D = 2, 3, 7, 8
    q, k, v = (torch.randn(B, H, L, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[0, 5:] = False
    mask = valid[:, None, None, :].expand(B, 1, L, L)
    drop = torch.rand(B, H, L, L) < 0.3
    monkeypatch.setattr(fd, "_drop_mask", lambda shape, p: drop)
    out, _ = fd.dropout_attention_forward(_Attn(), q, k, v, mask, dropout=0.3)
    ref = _eager(q, k, v, mask, drop, 0.3)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_causal_attention_keeps_sdpa(monkeypatch):
    """Decoders (causal) never take the encoder-only lean path, even with dropout drawn."""
    import transformers.integrations.sdpa_attention as sdpa

    calls = []
    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda *a, **k: calls.append(k) or ("sdpa", None))
    module = _Attn()
    module.is_causal = True
    q = torch.randn(1, 2, 4, 8)
    assert fd.dropout_attention_forward(module, q, q, q, None, dropout=0.1)[0] == "sdpa"
    module.is_causal = False
    assert fd.dropout_attention_forward(module, q, q, q, None, dropout=0.1, is_causal=True)[0] == "sdpa"
    assert len(calls) == 2


def test_gradient_checkpointing_recomputes_the_same_masks(tiny_bert_dir):
    """Checkpointed layers re-run their forward in backward: the masks must repeat (torch restores
    its RNG state there, and the masks are seeded from it)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(tiny_bert_dir, num_labels=1)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.2
    ids = torch.randint(5, 200, (3, 10))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, config=cfg)
        fd.use_fast_dropout(model)
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        torch.manual_seed(5)
        model(input_ids=ids).logits.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_attention_without_dropout_is_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4) for _ in range(3))
    for dropout, training in ((0.0, True), (0.2, False)):
        module = _Attn()
        module.training = training
        module.is_causal = False
        out, _ = fd.dropout_attention_forward(module, q, k, v, None, dropout=dropout if training else 0.0)
        ref, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0)
        assert torch.equal(out, ref)


def test_swapped_model_trains_saves_and_scores_as_before(tmp_path, tiny_bert_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(tiny_bert_dir, num_labels=1)
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.1
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, config=cfg)
    ids = torch.randint(5, 200, (4, 12))
    att = torch.ones(4, 12, dtype=torch.long)
    att[1, 8:] = 0
    model.eval()
    before = model(input_ids=ids, attention_mask=att).logits
    assert fd.use_fast_dropout(model) > 0
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == fd.ATTN_NAME
    assert torch.equal(model(input_ids=ids, attention_mask=att).logits, before)  # eval: no dropout, sdpa
    model.train()
    torch.manual_seed(1)
    a = model(input_ids=ids, attention_mask=att).logits
    torch.manual_seed(1)
    b = model(input_ids=ids, attention_mask=att).logits
    torch.manual_seed(2)
    c = model(input_ids=ids, attention_mask=att).logits
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert model.classifier.weight.grad is not None and model.bert.embeddings.word_embeddings.weight.grad is not None
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert fd.ATTN_NAME not in json.dumps(saved)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(reloaded(input_ids=ids, attention_mask=att).logits, before)


def test_trainer_switch(tmp_path, tiny_bert_dir):
    """model.fast_dropout (default on, CPU) swaps the modules; false leaves torch's dropout."""
    from helpers import write_tiny_groups

    from rerankforge.config import load_config
    from rerankforge.models.cross_encoder import CrossEncoder
    from rerankforge.train import TrainConfig
    from rerankforge.train.trainer import Trainer

    groups = write_tiny_groups(tmp_path / "groups.jsonl", n=4, size=4)
    for flag in (True, False):
        cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / str(flag)}", "model.max_length=32",
                                              f"data.train_groups={groups}", "optim.batch_size=2", "optim.max_steps=2",
                                              "bf16=false", "progress=false", f"model.fast_dropout={str(flag).lower()}"])
        model = CrossEncoder.from_base(str(tiny_bert_dir), max_length=32)
        trainer = Trainer(model=model, args=cfg)
        trainer.train()
        swapped = any(isinstance(m, fd.FastDropout) for m in trainer.model.modules())
        assert swapped is flag


def test_training_batches_are_what_train_draws(tmp_path, tiny_bert_dir):
    """Trainer.training_batches(epoch): the groups and candidates the loop sees, in its order."""
    from helpers import write_tiny_groups

    from rerankforge.config import load_config
    from rerankforge.train import TrainConfig
    from rerankforge.train.trainer import Trainer

    groups = write_tiny_groups(tmp_path / "groups.jsonl", n=6, size=6)
    cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / 'run'}", f"model.name_or_path={tiny_bert_dir}",
                                          "model.max_length=32", f"data.train_groups={groups}", "data.group_size=3",
                                          "optim.batch_size=4", "bf16=false", "progress=false"])
    trainer = Trainer(args=cfg)
    e0, e1 = trainer.training_batches(0), trainer.training_batches(1)
    assert [len(b) for b in e0] == [4, 2]
    assert all(len(item["candidates"]) == 3 for b in e0 for item in b)
    assert sorted(item["query_id"] for b in e0 for item in b) == sorted(item["query_id"] for b in e1 for item in b)
    assert [[i["query_id"] for i in b] for b in e0] != [[i["query_id"] for i in b] for b in e1]
    assert trainer.training_batches(0)[0][0]["texts"] == e0[0][0]["texts"]

    seen = []
    from rerankforge.data.dataset import GroupCollator

    original = GroupCollator.__call__

    def record(self, items):
        seen.append([(i["query_id"], [c.doc_id for c in i["candidates"]]) for i in items])
        return original(self, items)

    GroupCollator.__call__ = record
    try:
        Trainer(args=cfg).train()
    finally:
        GroupCollator.__call__ = original
    expected = [[(i["query_id"], [c.doc_id for c in i["candidates"]]) for i in b] for b in e0]
    assert seen[: len(expected)] == expected
