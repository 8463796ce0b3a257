"""The bi-encoder reranker scores as sentence-transformers' bi-encoder does, trains, and round-trips."""

import numpy as np
import torch

from rerankforge import load_reranker
from rerankforge.models.bi_encoder import BiEncoder

from helpers import make_groups


def test_default_bi_encoder_matches_sentence_transformers_cosine():
    from sentence_transformers import SentenceTransformer

    from rerankforge.models.base import default_base_model

    queries = ["vitamin d and bone fractures", "statins and heart disease", "vitamin d and bone fractures"]
    docs = ["Vitamin D supplements lower hip fracture risk.", "Statins reduce cardiovascular events.",
            "A study of sleep in teenagers."]
    ours = BiEncoder("default").score_pairs(queries, docs, bf16=False)
    st = SentenceTransformer(default_base_model(), device="cpu")
    q, d = st.encode(queries, normalize_embeddings=True), st.encode(docs, normalize_embeddings=True)
    np.testing.assert_allclose(ours * 0.05, (q * d).sum(-1), atol=2e-5)
    assert ours[0] > ours[2]  # the relevant document first


def test_forward_equals_score_pairs_and_training_moves_it(tmp_path, tiny_bert_dir):
    from rerankforge import Trainer

    torch.manual_seed(0)
    model = BiEncoder(str(tiny_bert_dir), max_length=32)
    groups = make_groups(n=4, size=3)
    feats = model.tokenize([g.query for g in groups[:2]], [[c.text for c in g.candidates] for g in groups[:2]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    model.eval()
    with torch.no_grad():
        fwd = model(feats, mask)
    flat = model.score_pairs([g.query for g in groups[:2] for _ in g.candidates],
                             [c.text for g in groups[:2] for c in g.candidates], bf16=False)
    np.testing.assert_allclose(fwd.reshape(-1).numpy(), flat, atol=1e-4)
    Trainer(model=model, loss="listwise_ce", train_data=groups,
            args={"output_dir": str(tmp_path / "run"), "bf16": False, "progress": False,
                  "optim": {"max_steps": 2, "batch_size": 2, "lr": 1e-3}}).train()
    again = load_reranker(tmp_path / "run" / "model")
    assert type(again) is BiEncoder and again.temperature == 0.05
    np.testing.assert_allclose(again.score_pairs(["q"], ["d"], bf16=False), model.score_pairs(["q"], ["d"], bf16=False),
                               atol=1e-5)


def test_in_batch_scores_cover_own_candidates_and_other_ranks(tiny_bert_dir):
    """In-batch scores: own candidates' columns equal forward(); another process' documents
    arrive as extra columns after (or before) the local block, without gradient."""
    torch.manual_seed(0)
    model = BiEncoder(str(tiny_bert_dir), max_length=32).eval()
    groups = make_groups(n=3, size=3)
    feats = model.tokenize([g.query for g in groups], [[c.text for c in g.candidates] for g in groups])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    keep = mask.reshape(-1).nonzero(as_tuple=True)[0]
    feats = {k: (v[keep] if k.startswith("d_") else v) for k, v in feats.items()}
    with torch.no_grad():
        own = model(feats, mask)
        ib = model(feats, mask, in_batch=True)
    assert ib.scores.shape == (3, 8) and ib.doc_offset == 0
    rows, slots = mask.nonzero(as_tuple=True)
    torch.testing.assert_close(ib.scores[rows, ib.own_columns[rows, slots]], own[rows, slots], atol=1e-5, rtol=0)
    assert (ib.own_columns[~mask] == -1).all()

    other = torch.nn.functional.normalize(torch.randn(5, model.model.config.hidden_size), dim=-1)

    def fake_gather(t):  # this is rank 1 of 2: the other process' block comes first
        if t.dtype == torch.long:  # sizes [[n, L]]
            return torch.cat([torch.tensor([[5, 1]]), t])
        assert not t.requires_grad  # nothing with a graph may be sent to other processes
        remote = torch.zeros_like(t)  # padded to the same [n_max, ...] shape as the local block
        remote[:5] = other.unsqueeze(1) if t.dim() == 3 else 1
        return torch.cat([remote, t])

    with torch.no_grad():
        gathered = model(feats, mask, in_batch=True, gather_fn=fake_gather, rank=1)
    assert gathered.doc_offset == 5 and gathered.scores.shape == (3, 13)
    torch.testing.assert_close(gathered.scores[:, 5:], ib.scores, atol=1e-5, rtol=0)
    q = model.embed({k[2:]: v for k, v in feats.items() if k.startswith("q_")})
    torch.testing.assert_close(gathered.scores[:, :5], q @ other.T / model.temperature, atol=1e-5, rtol=0)
