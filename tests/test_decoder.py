import json

import pytest
import torch

from rerankforge.errors import ConfigError
from rerankforge.models import load_reranker
from rerankforge.models.decoder import DEFAULT_TEMPLATE, DecoderReranker

QUERIES = ["what cat", "dogs"]
DOCS = [["cats purr .", "a b c d e f g h " * 3, "heat"], ["dogs bark !"]]
MASK = torch.tensor([[True, True, True], [True, False, False]])


@pytest.fixture()
def decoder(tiny_llama_dir):
    return DecoderReranker.from_base(str(tiny_llama_dir), max_length=48).eval()


def _manual_logits(reranker, query, doc):
    prompt = DEFAULT_TEMPLATE.replace("{query}", query).replace("{document}", doc)
    ids = reranker.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return reranker.model(input_ids=ids).logits[0, -1], ids[0].tolist()


def test_prompt_ids_match_the_plain_prompt(decoder):
    _, ids = _manual_logits(decoder, "what cat", "cats purr .")
    assert decoder.prompt_ids(["what cat"], ["cats purr ."])[0] == ids
    assert ids[0] == decoder.tokenizer.bos_token_id


@pytest.mark.parametrize("score", ["yes_logit", "log_odds"])
def test_score_equals_manual_yes_logit(tiny_llama_dir, score):
    reranker = DecoderReranker.from_base(str(tiny_llama_dir), max_length=128, score=score).eval()
    feats = reranker.tokenize(QUERIES, DOCS)
    assert (feats["attention_mask"][:, -1] == 1).all()  # left padded
    with torch.no_grad():
        scores = reranker(feats, MASK)
    assert scores.shape == (2, 3) and (scores[~MASK] == 0).all()
    for b, ds in enumerate(DOCS):
        for g, d in enumerate(ds):
            logits, _ = _manual_logits(reranker, QUERIES[b], d)
            want = logits[reranker.yes_id] - (logits[reranker.no_id] if score == "log_odds" else 0)
            assert scores[b, g].item() == pytest.approx(want.item(), abs=1e-5)


def test_right_padding_and_full_logits_give_same_scores(decoder, monkeypatch):
    feats = decoder.tokenize(QUERIES, DOCS)
    ids, att = feats["input_ids"], feats["attention_mask"]
    right_ids, right_att = torch.full_like(ids, decoder.pad_id), torch.zeros_like(att)
    for i in range(ids.shape[0]):
        n = int(att[i].sum())
        right_ids[i, :n], right_att[i, :n] = ids[i, -n:], 1
    with torch.no_grad():
        left = decoder(feats, MASK)
        right = decoder({"input_ids": right_ids, "attention_mask": right_att}, MASK)
        monkeypatch.setattr(decoder, "_keeps_positions", lambda: False)
        full = decoder(feats, MASK)
    assert torch.allclose(left, right, atol=1e-5)
    assert torch.allclose(left, full, atol=1e-5)


def test_truncation_cuts_the_document_and_keeps_the_tail(decoder):
    long_doc = "a b c d " * 40
    ids = decoder.prompt_ids(["what cat"], [long_doc])[0]
    tail = decoder.tokenizer(decoder._tail, add_special_tokens=False)["input_ids"]
    head = decoder.tokenizer("Query: what cat\nDocument:", add_special_tokens=False)["input_ids"]
    assert len(ids) == 48
    assert ids[-len(tail) :] == tail and ids[1 : 1 + len(head)] == head
    short = decoder.prompt_ids(["what cat"], ["a b"])[0]
    assert len(short) < 48 and short[-len(tail) :] == tail


def test_query_in_the_tail_and_errors(tiny_llama_dir, decoder):
    template = "Document: {document}\nQuery: {query}\nAnswer:"
    r = DecoderReranker(decoder.model, decoder.tokenizer, max_length=20, template=template)
    ids = r.prompt_ids(["what cat"], ["a b c " * 20])[0]
    tail = decoder.tokenizer("\nQuery: what cat\nAnswer:", add_special_tokens=False)["input_ids"]
    assert len(ids) == 20 and ids[-len(tail) :] == tail
    with pytest.raises(ConfigError, match="document"):
        DecoderReranker(decoder.model, decoder.tokenizer, template="Query: {query}")
    with pytest.raises(ConfigError, match="single token"):
        DecoderReranker(decoder.model, decoder.tokenizer, yes_token="yes no")
    with pytest.raises(ConfigError, match="score"):
        DecoderReranker(decoder.model, decoder.tokenizer, score="softmax")


def test_score_pairs_and_save_load(decoder, tmp_path):
    flat_q = [q for q, ds in zip(QUERIES, DOCS) for _ in ds]
    flat_d = [d for ds in DOCS for d in ds]
    with torch.no_grad():
        want = decoder(decoder.tokenize(QUERIES, DOCS), MASK)[MASK]
    before = decoder.score_pairs(flat_q, flat_d, batch_size=3, bf16=False)
    assert torch.allclose(torch.from_numpy(before), want, atol=1e-5)
    decoder.save_pretrained(tmp_path / "dec")
    meta = json.loads((tmp_path / "dec" / "rerankforge.json").read_text())
    assert meta["model_type"] == "decoder" and meta["template"] == DEFAULT_TEMPLATE and not meta["adapter"]
    loaded = load_reranker(tmp_path / "dec")
    assert isinstance(loaded, DecoderReranker) and loaded.max_length == 48
    assert abs(loaded.score_pairs(flat_q, flat_d, bf16=False) - before).max() <= 1e-6


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_other_architectures(tiny_llama_dir, arch):
    """Qwen2 (tied embeddings) and GPT-2 (absolute positions: left padding needs position ids)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=256))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok.get_vocab()), n_embd=32, n_layer=2, n_head=2,
                                           n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                           bos_token_id=2, eos_token_id=3))
    reranker = DecoderReranker(model.eval(), tok, max_length=128, score="log_odds")
    with torch.no_grad():
        scores = reranker(reranker.tokenize(QUERIES, DOCS), MASK)
    for b, ds in enumerate(DOCS):
        for g, d in enumerate(ds):
            logits, _ = _manual_logits(reranker, QUERIES[b], d)
            want = logits[reranker.yes_id] - logits[reranker.no_id]
            assert scores[b, g].item() == pytest.approx(want.item(), abs=1e-5)


def test_trains_one_step(decoder):
    decoder.train()
    feats = decoder.tokenize(QUERIES, DOCS)
    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-2)
    scores = decoder(feats, MASK)
    loss = torch.nn.functional.cross_entropy(scores.masked_fill(~MASK, -1e4), torch.tensor([0, 0]))
    loss.backward()
    assert all(p.grad is not None for p in decoder.parameters() if p.requires_grad)
    opt.step()
    with torch.no_grad():
        assert not torch.allclose(decoder(feats, MASK), scores)
