"""model.attention_dropout: sets attention-probability dropout on BERT- and Llama-style models."""

import pytest
import torch

from rerankforge.models.dropout import set_attention_dropout
from rerankforge.train.build import build_model
from rerankforge.train.config import ModelConfig


def _attention_dropouts(model):
    return [m.dropout.p for m in model.modules()
            if "attention" in type(m).__name__.lower() and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)]


def test_build_model_sets_bert_attention_dropout_only(tiny_bert_dir):
    from transformers import BertConfig

    path = tiny_bert_dir.parent / "tiny-bert-dropout"
    if not path.exists():
        import shutil

        shutil.copytree(tiny_bert_dir, path)
        cfg = BertConfig.from_pretrained(path)
        cfg.attention_probs_dropout_prob, cfg.hidden_dropout_prob = 0.3, 0.2
        cfg.save_pretrained(path)
    keep = build_model(ModelConfig(name_or_path=str(path), max_length=32))
    assert _attention_dropouts(keep) and set(_attention_dropouts(keep)) == {0.3}

    model = build_model(ModelConfig(name_or_path=str(path), max_length=32, attention_dropout=0.0))
    assert set(_attention_dropouts(model)) == {0.0}
    assert model.model.config.attention_probs_dropout_prob == 0.0
    hidden = [m.p for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "attention.self" not in name]
    assert hidden and set(hidden) == {0.2}  # hidden-state dropout untouched

    # the attention itself became deterministic: with hidden dropout also off, train == eval
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    feats = model.tokenize(["a query"], [["a document about things", "another one"]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    model.train()
    a = model(feats, mask)
    model.eval()
    torch.testing.assert_close(a, model(feats, mask))


def test_llama_style_attention_dropout_attribute():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, attention_dropout=0.2))
    assert set_attention_dropout(model, 0.0) == 2
    assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout")
               and isinstance(m.attention_dropout, float))
    assert model.config.attention_dropout == 0.0


def test_invalid_attention_dropout(tiny_bert_dir):
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        build_model(ModelConfig(name_or_path=str(tiny_bert_dir), max_length=32, attention_dropout=1.0))


def test_model_without_attention_modules_changes_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    assert set_attention_dropout(model, 0.0) == 0
    assert model[1].p == 0.5
