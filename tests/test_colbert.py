import json
import string

import pytest
import torch
from transformers import AutoModel

from rerankforge.errors import ConfigError
from rerankforge.models import load_reranker
from rerankforge.models.colbert import PROJECTION_FILE, ColBERT, InBatchScores, maxsim, maxsim_paired

QUERIES = ["what causes fever?", "cats", "the history of the printing press in europe and asia"]
DOCS = [["Fever is caused by infection, mostly.", "Bananas are yellow!", "Heat; sweat; (chills)."],
        ["Cats purr."],
        ["Gutenberg built a press around 1440.", "Woodblock printing came first in China."]]


@pytest.fixture()
def colbert(tiny_bert_dir):
    torch.manual_seed(0)
    return ColBERT.from_base(str(tiny_bert_dir), dim=16, query_length=8, max_length=24).eval()


def _mask(docs):
    width = max(len(d) for d in docs)
    return torch.tensor([[g < len(d) for g in range(width)] for d in docs])


def _hand_maxsim(q, qm, d, dm):
    total = 0.0
    for i in range(q.shape[0]):
        if not qm[i]:
            continue
        total += max(float(q[i] @ d[j]) for j in range(d.shape[0]) if dm[j])
    return total


def test_maxsim_matches_hand_computation():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, 4, generator=g)
    d = torch.randn(3, 5, 4, generator=g)
    qm = torch.tensor([[True, True, False], [True, True, True]])
    dm = torch.tensor([[True, True, True, False, False], [True, False, True, True, True],
                       [False, True, False, False, False]])
    expected = torch.tensor([[_hand_maxsim(q[b], qm[b], d[n], dm[n]) for n in range(3)] for b in range(2)])
    assert torch.allclose(maxsim(q, qm, d, dm), expected, atol=1e-5)
    # chunked evaluation (one document per chunk) gives the same numbers
    assert torch.allclose(maxsim(q, qm, d, dm, max_elements=1), expected, atol=1e-5)
    rows = torch.tensor([0, 1, 1])
    assert torch.allclose(maxsim_paired(q[rows], qm[rows], d, dm), expected[rows, torch.arange(3)], atol=1e-5)


def test_query_augmentation_to_fixed_length(colbert):
    tok = colbert.tokenizer
    feats = colbert.tokenize_queries(QUERIES)
    ids, att, mask = feats["input_ids"], feats["attention_mask"], feats["mask"]
    assert ids.shape == (3, 8) and mask.all()
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, 1] == colbert.query_marker_id).all()
    # "cats" -> [CLS] [Q] cats [SEP] then four [MASK]s that are not attended to
    assert ids[1, 3] == tok.sep_token_id
    assert (ids[1, 4:] == tok.mask_token_id).all() and (att[1, 4:] == 0).all() and (att[1, :4] == 1).all()
    # a long query is cut to exactly query_length with its [SEP] kept
    assert ids[2, -1] == tok.sep_token_id and att[2].all()
    attend = ColBERT(colbert.model, tok, colbert.projection,
                     type(colbert.colbert_config)(**{**vars(colbert.colbert_config), "attend_to_mask_tokens": True}))
    assert attend.tokenize_queries(QUERIES)["attention_mask"].all()
    plain = ColBERT(colbert.model, tok, colbert.projection,
                    type(colbert.colbert_config)(**{**vars(colbert.colbert_config), "query_augmentation": False}))
    p = plain.tokenize_queries(["cats", "what causes fever?"])
    assert p["input_ids"].shape[1] == 7 and tok.mask_token_id not in p["input_ids"]
    assert torch.equal(p["mask"], p["attention_mask"].bool())


def test_document_marker_and_punctuation_mask(colbert):
    tok = colbert.tokenizer
    docs = ["Heat; sweat; (chills).", "Cats purr"]
    feats = colbert.tokenize_docs(docs)
    ids, att, mask = feats["input_ids"], feats["attention_mask"], feats["mask"]
    assert (ids[:, 1] == colbert.doc_marker_id).all()
    punct = {i for c in string.punctuation for i in tok(c, add_special_tokens=False)["input_ids"]}
    for row in range(2):
        for j in range(ids.shape[1]):
            expected = bool(att[row, j]) and int(ids[row, j]) not in punct
            assert bool(mask[row, j]) == expected
    assert int((~mask[0] & att[0].bool()).sum()) == 5  # ; ; ( ) .
    # the score ignores punctuation vectors: it equals the hand MaxSim over the masked tokens only
    q = colbert.tokenize_queries(["heat"])
    with torch.no_grad():
        qv = colbert.embed(q["input_ids"], q["attention_mask"])[0]
        dv = colbert.embed(ids, att)[0]
        got = colbert({**{f"q_{k}": v for k, v in q.items()}, **{f"d_{k}": v[:1] for k, v in feats.items()}},
                      torch.tensor([[True]]))
    assert got.item() == pytest.approx(_hand_maxsim(qv, q["mask"][0], dv, mask[0]), abs=1e-5)


def test_max_length_counts_specials_and_marker(colbert):
    feats = colbert.tokenize_docs(["word " * 100])
    assert feats["input_ids"].shape[1] == 24
    assert feats["input_ids"][0, -1] == colbert.tokenizer.sep_token_id


def test_forward_shapes_padding_and_pair_scores(colbert):
    feats = colbert.tokenize(QUERIES, DOCS)
    mask = _mask(DOCS)
    assert feats["q_input_ids"].shape[0] == 3 and feats["d_input_ids"].shape[0] == 6
    with torch.no_grad():
        scores = colbert(feats, mask)
    assert scores.shape == (3, 3)
    assert (scores[~mask] == 0).all() and (scores[mask] != 0).all()
    # each pair alone (no padding from other documents) scores the same
    for b, ds in enumerate(DOCS):
        for g, d in enumerate(ds):
            with torch.no_grad():
                alone = colbert(colbert.tokenize([QUERIES[b]], [[d]]), torch.tensor([[True]]))
            assert alone.item() == pytest.approx(scores[b, g].item(), abs=1e-5)
    flat_q = [q for q, ds in zip(QUERIES, DOCS) for _ in ds]
    flat_d = [d for ds in DOCS for d in ds]
    pairs = colbert.score_pairs(flat_q, flat_d, batch_size=4, bf16=False)
    assert torch.allclose(torch.from_numpy(pairs), scores[mask], atol=1e-5)
    with pytest.raises(ValueError, match="real pairs"):
        colbert(feats, torch.ones(3, 3, dtype=torch.bool))


def test_score_pairs_encodes_each_text_once(colbert, monkeypatch):
    seen_q, seen_d = [], []
    encode_queries, tokenize_docs = colbert.encode_queries, colbert.tokenize_docs

    def spy_q(queries, batch_size=64):
        seen_q.extend(queries)
        return encode_queries(queries, batch_size)

    def spy_d(docs):
        seen_d.extend(docs)
        return tokenize_docs(docs)

    monkeypatch.setattr(colbert, "encode_queries", spy_q)
    monkeypatch.setattr(colbert, "tokenize_docs", spy_d)
    queries = ["cats", "what causes fever?", "cats", "cats", "what causes fever?"]
    fever = "Fever is caused by infection, mostly."
    docs = ["Cats purr.", fever, "Bananas are yellow!", fever, "Cats purr."]
    got = colbert.score_pairs(queries, docs, batch_size=2, bf16=False)
    assert sorted(seen_q) == ["cats", "what causes fever?"] and len(seen_d) == 3
    for q, d, s in zip(queries, docs, got):
        with torch.no_grad():
            alone = colbert(colbert.tokenize([q], [[d]]), torch.tensor([[True]])).item()
        assert s == pytest.approx(alone, abs=1e-5)


def test_encode_helpers_pad_across_batches(colbert):
    vecs, mask = colbert.encode_docs(["short", "a much longer document with many words"], batch_size=1)
    assert vecs.shape[:2] == mask.shape and vecs.shape[0] == 2 and vecs.shape[2] == 16
    assert not mask[0, 4:].any()
    assert torch.allclose(vecs[mask].norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-5)
    q, qm = colbert.encode_queries(QUERIES)
    assert q.shape == (3, 8, 16) and qm.all()


def test_in_batch_scores_local(colbert):
    feats = colbert.tokenize(QUERIES, DOCS)
    mask = _mask(DOCS)
    with torch.no_grad():
        own = colbert(feats, mask)
        ib = colbert(feats, mask, in_batch=True)
    assert isinstance(ib, InBatchScores) and ib.scores.shape == (3, 6) and ib.doc_offset == 0
    assert ib.own_columns.tolist() == [[0, 1, 2], [3, -1, -1], [4, 5, -1]]
    rows, slots = mask.nonzero(as_tuple=True)
    assert torch.allclose(ib.scores[rows, ib.own_columns[rows, slots]], own[mask], atol=1e-5)
    labels = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    expanded = ib.expand(labels)
    assert expanded.tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]]
    assert torch.isnan(ib.expand(labels, fill=float("nan"))[0, 3:]).all() and ib.mask().all()


class FakeGather:
    """Stands in for all_gather on a 2-process job: the other rank's documents are fixed tensors."""

    def __init__(self, other_vecs, other_mask, rank):
        self.other_vecs, self.other_mask, self.rank = other_vecs, other_mask, rank
        self.calls = 0

    def __call__(self, t):
        self.calls += 1
        if self.calls == 1:  # sizes [1, 2]
            other = torch.tensor([[self.other_vecs.shape[0], self.other_vecs.shape[1]]])
        elif t.dim() == 3:  # vectors [n_max, L_max, dim]
            assert not t.requires_grad  # nothing with a graph may be sent to other ranks
            other = torch.zeros_like(t)
            other[: self.other_vecs.shape[0], : self.other_vecs.shape[1]] = self.other_vecs
        else:  # masks [n_max, L_max] as uint8
            other = torch.zeros_like(t)
            other[: self.other_mask.shape[0], : self.other_mask.shape[1]] = self.other_mask.to(t.dtype)
        return torch.cat([other, t] if self.rank == 1 else [t, other])


@pytest.mark.parametrize("rank", [0, 1])
def test_in_batch_gathers_other_rank(colbert, rank):
    other_docs = ["A very long document from the other process that pads everything further out, truly.",
                  "Second remote doc.", "Third remote doc.", "Fourth remote doc."]
    with torch.no_grad():
        other_vecs, other_mask = colbert.encode_docs(other_docs)
    feats = colbert.tokenize(QUERIES, DOCS)
    mask = _mask(DOCS)
    assert other_vecs.shape[1] > feats["d_input_ids"].shape[1]  # local docs must be padded to gather
    colbert.zero_grad()
    ib = colbert.forward_in_batch(feats, mask, gather_fn=FakeGather(other_vecs, other_mask, rank), rank=rank)
    assert ib.scores.shape == (3, 10)
    local_cols = slice(4, 10) if rank == 1 else slice(0, 6)
    remote_cols = slice(0, 4) if rank == 1 else slice(6, 10)
    assert ib.doc_offset == (4 if rank == 1 else 0)
    assert ib.own_columns[0].tolist() == [ib.doc_offset + i for i in range(3)]
    with torch.no_grad():
        q, qm = colbert.encode_queries(QUERIES)
        assert torch.allclose(ib.scores[:, remote_cols], maxsim(q, qm, other_vecs, other_mask), atol=1e-5)
        assert torch.allclose(ib.scores[:, local_cols], colbert.forward_in_batch(feats, mask).scores, atol=1e-5)
    ib.scores.sum().backward()
    assert colbert.projection.weight.grad is not None and colbert.projection.weight.grad.abs().sum() > 0


def test_save_load_identical_scores(colbert, tmp_path):
    flat_q = [q for q, ds in zip(QUERIES, DOCS) for _ in ds]
    flat_d = [d for ds in DOCS for d in ds]
    before = colbert.score_pairs(flat_q, flat_d, bf16=False)
    colbert.save_pretrained(tmp_path / "cb")
    meta = json.loads((tmp_path / "cb" / "rerankforge.json").read_text())
    assert meta["model_type"] == "colbert" and meta["dim"] == 16 and meta["query_length"] == 8
    assert meta["query_marker"] == "[unused0]" and meta["doc_marker"] == "[unused1]" and meta["max_length"] == 24
    assert (tmp_path / "cb" / PROJECTION_FILE).exists()
    AutoModel.from_pretrained(tmp_path / "cb")  # the encoder is a plain HF checkpoint
    loaded = load_reranker(tmp_path / "cb")
    assert isinstance(loaded, ColBERT)
    after = loaded.score_pairs(flat_q, flat_d, bf16=False)
    assert abs(before - after).max() <= 1e-6
    assert ColBERT.from_pretrained(tmp_path / "cb", max_length=12).colbert_config.max_length == 12


def test_added_markers_resize_and_reload(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    cb = ColBERT.from_base(str(tiny_bert_dir), dim=8, query_length=6, max_length=16, query_marker="[Q]",
                           doc_marker="[D]").eval()
    base_vocab = len(AutoModel.from_pretrained(tiny_bert_dir).get_input_embeddings().weight)
    assert cb.colbert_config.added_markers and cb.model.get_input_embeddings().weight.shape[0] == base_vocab + 2
    assert cb.query_marker_id >= base_vocab and cb.doc_marker_id >= base_vocab
    before = cb.score_pairs(["cats"], ["cats purr"], bf16=False)
    cb.save_pretrained(tmp_path / "m")
    after = load_reranker(tmp_path / "m").score_pairs(["cats"], ["cats purr"], bf16=False)
    assert abs(before - after).max() <= 1e-6


def test_bad_marker_is_a_config_error(colbert):
    cfg = type(colbert.colbert_config)(**{**vars(colbert.colbert_config), "query_marker": "[nope-not-a-token]"})
    with pytest.raises(ConfigError, match="marker"):
        ColBERT(colbert.model, colbert.tokenizer, colbert.projection, cfg)


def test_trains_one_step(colbert):
    colbert.train()
    feats = colbert.tokenize(QUERIES, DOCS)
    mask = _mask(DOCS)
    labels = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    opt = torch.optim.AdamW(colbert.parameters(), lr=1e-2)
    scores = colbert(feats, mask)
    loss = torch.nn.functional.cross_entropy(scores.masked_fill(~mask, -1e4), labels.argmax(1))
    loss.backward()
    # every trainable parameter takes part (DDP without find_unused_parameters needs that)
    assert all(p.grad is not None for p in colbert.parameters() if p.requires_grad)
    opt.step()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert not torch.allclose(colbert(feats, mask), scores)


def _gather_worker(rank, init_file, out_dir):
    import torch.distributed as dist

    from rerankforge.models.colbert import gather_documents

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        g = torch.Generator().manual_seed(rank)
        n, length = (3, 5) if rank == 0 else (2, 7)  # ranks differ in both documents and length
        d = torch.randn(n, length, 4, generator=g, requires_grad=True)
        m = torch.rand(n, length, generator=g) > 0.3
        vecs, masks, offset = gather_documents(d, m, _default_gather(), rank)
        (vecs * masks[..., None]).sum().backward()
        torch.save({"vecs": vecs.detach(), "masks": masks, "offset": offset, "d": d.detach(), "m": m,
                    "grad": d.grad}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _default_gather():
    from rerankforge.models.colbert import distributed_gather

    return distributed_gather


def test_gather_documents_two_processes(tmp_path):
    """Real torch.distributed (gloo, 2 CPU processes): uneven sizes are padded, gathered and cut back."""
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert (r0["offset"], r1["offset"]) == (0, 3)
    for r in (r0, r1):
        assert r["vecs"].shape == (5, 7, 4)
        assert torch.equal(r["vecs"][:3, :5], r0["d"]) and torch.equal(r["vecs"][3:, :7], r1["d"])
        assert torch.equal(r["masks"][:3, :5], r0["m"]) and not r["masks"][:3, 5:].any()
        assert torch.equal(r["masks"][3:], r1["m"])
        # the local block carries the gradient back to this process' own documents
        assert torch.equal(r["grad"], r["m"][..., None].float().expand_as(r["grad"]))
