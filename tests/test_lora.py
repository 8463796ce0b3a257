import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rerankforge.errors import ConfigError
from rerankforge.models import load_reranker
from rerankforge.models.colbert import ColBERT
from rerankforge.models.cross_encoder import CrossEncoder
from rerankforge.models.decoder import DecoderReranker
from rerankforge.models.peft_utils import (
    apply_lora,
    default_target_modules,
    enable_gradient_checkpointing,
    is_peft,
    lora_config,
)

Q = ["what cat", "dogs", "what cat"]
D = ["cats purr .", "dogs bark !", "heat"]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def _perturb_lora(reranker, seed=0):
    """LoRA B starts at zero (adapter = identity) and a saved head copy equals the original: random
    values make both change the scores, so an export that drops either is caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in reranker.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _scores(reranker):
    return torch.from_numpy(reranker.score_pairs(Q, D, bf16=False))


def test_cross_encoder_lora_trainables_and_merged_export(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    ce = apply_lora(CrossEncoder.from_base(str(tiny_bert_dir), max_length=32), LORA).eval()
    assert is_peft(ce.model)
    trainable = {n for n, p in ce.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert any("classifier" in n for n in trainable)  # the fresh head is trained fully (modules_to_save)
    targeted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable if "lora_A" in n}
    assert targeted == {"query", "key", "value"}
    assert all(ce.is_head_param(n) for n in trainable if "classifier" in n)
    base = _scores(ce)
    _perturb_lora(ce)
    before = _scores(ce)
    assert not torch.allclose(base, before)
    ce.save_pretrained(tmp_path / "ce")
    assert not (tmp_path / "ce" / "adapter_config.json").exists()
    assert is_peft(ce.model) and torch.allclose(_scores(ce), before)  # the live model is untouched
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ce")
    assert not any("lora" in n for n, _ in plain.named_parameters())
    after = _scores(load_reranker(tmp_path / "ce"))
    assert abs(after - before).max() <= 1e-5


def test_decoder_lora_adapter_and_merged(tiny_llama_dir, tmp_path):  # noqa: F811
    dec = apply_lora(DecoderReranker.from_base(str(tiny_llama_dir), max_length=64), LORA).eval()
    targeted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in dec.named_parameters() if "lora_A" in n}
    assert targeted == {"q_proj", "k_proj", "v_proj", "o_proj"}
    _perturb_lora(dec, seed=1)
    before = _scores(dec)
    dec.save_pretrained(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / "rerankforge.json").read_text())
    assert meta["adapter"] and meta["base_model"] == str(tiny_llama_dir)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    reloaded = load_reranker(tmp_path / "adapter")
    assert is_peft(reloaded.model)
    assert abs(_scores(reloaded) - before).max() <= 1e-6
    assert not any(p.requires_grad for p in reloaded.parameters())
    trainable = DecoderReranker.from_pretrained(tmp_path / "adapter", is_trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())

    dec.save_pretrained(tmp_path / "merged", merge_lora=True)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert not json.loads((tmp_path / "merged" / "rerankforge.json").read_text())["adapter"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    merged = load_reranker(tmp_path / "merged")
    assert not is_peft(merged.model)
    assert abs(_scores(merged) - before).max() <= 1e-5


def test_colbert_lora_keeps_projection_trainable(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    cb = apply_lora(ColBERT.from_base(str(tiny_bert_dir), dim=8, query_length=8, max_length=16), LORA).eval()
    trainable = {n for n, p in cb.named_parameters() if p.requires_grad}
    assert "projection.weight" in trainable and all("lora_" in n or n == "projection.weight" for n in trainable)
    _perturb_lora(cb, seed=2)
    before = _scores(cb)
    cb.save_pretrained(tmp_path / "merged")
    assert abs(_scores(load_reranker(tmp_path / "merged")) - before).max() <= 1e-5
    cb.save_pretrained(tmp_path / "adapter", merge_lora=False)
    assert abs(_scores(load_reranker(tmp_path / "adapter")) - before).max() <= 1e-6


def test_lora_config_errors_and_defaults(tiny_bert_dir):
    ce = CrossEncoder.from_base(str(tiny_bert_dir), max_length=32)
    with pytest.raises(ConfigError, match="model.lora.rank"):
        apply_lora(ce, {"rank": 4})
    cfg = lora_config(ce.model, {"r": 2, "target_modules": ["query"], "use_rslora": True})
    assert cfg.target_modules == {"query"} and cfg.use_rslora and cfg.lora_alpha == 8
    assert default_target_modules(ce.model) == ["query", "key", "value"]
    apply_lora(ce, {"r": 2})
    with pytest.raises(ConfigError, match="already"):
        apply_lora(ce, {"r": 2})


def _grads(reranker, feats, mask):
    reranker.zero_grad()
    reranker(feats, mask).sum().backward()
    return {n: p.grad.clone() for n, p in reranker.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["cross_encoder", "colbert", "decoder", "cross_encoder+lora"])
def test_gradient_checkpointing_same_gradients(kind, tiny_bert_dir, tiny_llama_dir):  # noqa: F811
    torch.manual_seed(0)
    if kind.startswith("cross_encoder"):
        model = CrossEncoder.from_base(str(tiny_bert_dir), max_length=32)
        if kind.endswith("lora"):
            model = apply_lora(model, LORA)
            _perturb_lora(model)
    elif kind == "colbert":
        model = ColBERT.from_base(str(tiny_bert_dir), dim=8, query_length=8, max_length=16)
    else:
        model = DecoderReranker.from_base(str(tiny_llama_dir), max_length=64)
    model.train()
    feats = model.tokenize(["what cat", "dogs"], [["cats purr .", "heat"], ["dogs bark !"]])
    mask = torch.tensor([[True, True], [True, False]])
    reference = copy.deepcopy(model)
    enable_gradient_checkpointing(model)
    hf = model.model.get_base_model() if is_peft(model.model) else model.model
    assert getattr(hf, "is_activation_checkpointing", None) or hf.is_gradient_checkpointing
    want, got = _grads(reference, feats, mask), _grads(model, feats, mask)
    assert got.keys() == want.keys() and got
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6), name
