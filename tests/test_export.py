"""The exported cross-encoder loads unchanged in transformers and sentence-transformers, same scores."""

import numpy as np
import pytest
import torch

from rerankforge.models import load_reranker
from rerankforge.models.cross_encoder import CrossEncoder

PAIRS = [("what causes cancer", "Tumour growth is driven by mutations in oncogenes."),
         ("insulin resistance", "Obesity is associated with reduced insulin sensitivity in muscle and liver."),
         ("vaccine efficacy", "word " * 400)]  # long enough to be truncated


def export(model_dir, tmp_path, max_length=64):
    torch.manual_seed(0)
    enc = CrossEncoder.from_base(str(model_dir), max_length=max_length)
    out = tmp_path / "export"
    enc.save_pretrained(out)
    return enc, out


def ours(out):
    model = load_reranker(out)
    return model.score_pairs([q for q, _ in PAIRS], [d for _, d in PAIRS], bf16=False)


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_scores_match_transformers_and_sentence_transformers(tmp_path, tiny_bert_dir, which):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerankforge.models.base import default_base_model

    _, out = export(tiny_bert_dir if which == "tiny" else default_base_model(), tmp_path)
    mine = ours(out)

    tok = AutoTokenizer.from_pretrained(out)
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    feats = tok([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, truncation=True, max_length=64,
                return_tensors="pt")
    with torch.no_grad():
        hf_scores = hf(**feats).logits.view(-1).numpy()
    np.testing.assert_allclose(mine, hf_scores, atol=1e-4)

    from sentence_transformers import CrossEncoder as STCrossEncoder

    st = STCrossEncoder(str(out), device="cpu")
    st_scores = st.predict(PAIRS, activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    np.testing.assert_allclose(mine, st_scores, atol=1e-4)
    # default activation is a sigmoid over the same logits
    np.testing.assert_allclose(st.predict(PAIRS), 1 / (1 + np.exp(-mine)), atol=1e-4)
    assert len(set(np.round(mine, 5))) == 3  # distinct scores: the comparison is not vacuous


def test_group_forward_matches_pairwise_scoring(tiny_bert_dir, tmp_path):
    """Scores from a padded [B, G] batch equal scores of the same pairs scored one by one."""
    from rerankforge.data.dataset import GroupCollator, GroupDataset
    from helpers import make_groups

    enc, _ = export(tiny_bert_dir, tmp_path)
    enc.eval()
    groups = make_groups(n=3, size=4)
    groups[1].candidates = groups[1].candidates[:2]  # ragged group -> padding
    ds = GroupDataset(groups)
    batch = GroupCollator(enc.tokenize)([ds[i] for i in range(3)])
    with torch.no_grad():
        scores = enc(batch.features, batch.mask)
    assert scores.shape == (3, 4) and batch.mask.sum() == 10
    for b, g in enumerate(groups):
        single = enc.score_pairs([g.query] * len(g.candidates), [c.text for c in g.candidates], bf16=False)
        np.testing.assert_allclose(scores[b, : len(g.candidates)].numpy(), single, atol=1e-5)
    assert torch.all(scores[1, 2:] == 0)
