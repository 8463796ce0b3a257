"""The cross-encoder head runs in float32 under bf16 autocast, so close scores do not tie."""

import copy

import pytest
import torch
from torch import nn

from rerankforge.models.precision import Float32Linear, float32_head


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 1)

    def forward(self, x):
        return self.classifier(torch.tanh(self.body(x)))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="CPU bf16 autocast needs oneDNN")
def test_head_output_is_float32_and_distinct_under_autocast():
    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(512, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(x)
    assert before.dtype == torch.bfloat16
    assert float32_head(model, ("classifier", "score")) == ["classifier"]
    assert isinstance(model.classifier, Float32Linear)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(x)
    assert after.dtype == torch.float32
    # same function (the body still runs in bf16), without the bf16 rounding of the logit
    assert torch.allclose(after, before.float(), atol=0.02)
    assert len(torch.unique(after)) > len(torch.unique(before))
    assert len(torch.unique(after)) == 512


def test_class_swap_keeps_state_dict_and_survives_deepcopy():
    model = Tiny()
    keys = list(model.state_dict())
    float32_head(model, ("classifier",))
    assert list(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    assert isinstance(clone.classifier, Float32Linear)
    assert float32_head(model, ("classifier",)) == []  # already done: nothing to change


def test_cross_encoder_scores_have_float32_resolution():
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rerankforge.models.base import default_base_model
    from rerankforge.models.cross_encoder import CrossEncoder

    tok = AutoTokenizer.from_pretrained(default_base_model())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=1)
    torch.manual_seed(1)
    enc = CrossEncoder(BertForSequenceClassification(cfg), tok, max_length=32)
    assert isinstance(enc.model.classifier, Float32Linear)
    docs = [f"document number {i} about topic {i % 7}" for i in range(64)]
    scores = enc.score_pairs(["a query"] * 64, docs, batch_size=64, bf16=True)
    assert len(set(scores.tolist())) == 64
