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

    # Only the hidden-state dropouts are switched off here; the attention dropouts keep what
    # build_model set. With attention dropout 0 training then equals evaluation, and the same
    # check on the model that kept 0.3 shows it can tell the difference.
    feats = model.tokenize(["a query"], [["a document about things", "another one"]])
    mask = torch.ones(1, 2, dtype=torch.bool)

    def train_vs_eval(m):
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Dropout) and "attention.self" not in name:
                mod.p = 0.0
        torch.manual_seed(0)
        m.train()
        a = m(feats, mask)
        m.eval()
        return a, m(feats, mask)

    torch.testing.assert_close(*train_vs_eval(model))
    trained, evaluated = train_vs_eval(keep)
    assert not torch.allclose(trained, evaluated)


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
