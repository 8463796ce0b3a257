"""Cached pair encoding must give exactly the tokenizer's tensors, or switch itself off."""

import random

import pytest
import torch
from transformers import AutoTokenizer

from rerankforge.models.base import default_base_model
from rerankforge.models.pair_tokens import PairEncoder

WORDS = ("vitamin d fracture risk statins mortality élan naïve café β-blockers IL-6 10.5 mg/kg "
         "(n=300) randomised trial cohort meta-analysis hippocampal consolidation").split()


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(default_base_model())


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def reference(tok, queries, docs, max_length):
    return dict(tok(queries, docs, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


@pytest.mark.parametrize("max_length", [16, 64, 256])
def test_same_tensors_as_the_tokenizer(tok, max_length):
    rng = random.Random(max_length)
    enc = PairEncoder(tok)
    assert enc.enabled
    # short and long documents; queries from one word to past half the budget (tokenizer path)
    queries = [text(rng, rng.choice([1, 3, 8, 20, 40, 60, 90, 130])) for _ in range(60)]
    docs = [text(rng, rng.choice([1, 5, 30, 120, 400])) for _ in range(60)]
    for batch in range(3):  # repeated texts come from the cache the second time
        rng.shuffle(docs)
        ours = enc.encode(queries, docs, max_length)
        ref = reference(tok, queries, docs, max_length)
        assert set(ours) == set(ref)
        for k in ref:
            assert torch.equal(ours[k], ref[k]), (k, batch)


def test_boundary_query_lengths(tok):
    enc = PairEncoder(tok)
    long_doc = "word " * 600
    for n in range(118, 132):  # around half of the 253-token budget of max_length 256
        q = "q " * n
        ours, ref = enc.encode([q], [long_doc], 256), reference(tok, [q], [long_doc], 256)
        assert all(torch.equal(ours[k], ref[k]) for k in ref), n


def test_cache_is_bounded_and_reused(tok):
    enc = PairEncoder(tok, max_cached=3)
    enc._cache.clear()  # (the probes at start-up went through it)
    enc.encode(["a query"] * 4, ["doc one", "doc two", "doc one", "doc three"], 32)
    # least recently used goes first: "doc two" (the query and "doc one" were used again)
    assert list(enc._cache) == [(32, "doc one"), (32, "a query"), (32, "doc three")]
    enc.encode(["a query"], ["doc three"], 32)
    assert list(enc._cache)[-1] == (32, "doc three")


def test_unsupported_tokenizer_switches_off_and_cross_encoder_falls_back(tok, tiny_bert_dir):
    from rerankforge.models.cross_encoder import CrossEncoder

    left = AutoTokenizer.from_pretrained(default_base_model())
    left.padding_side = "left"
    assert not PairEncoder(left).enabled
    model = CrossEncoder.from_base(str(tiny_bert_dir), max_length=32)
    fast = model.tokenize(["q one", "q two"], [["a doc", "another doc here"], ["x"]])
    model.tokenizer = left  # swapped tokenizer: the encoder is rebuilt, disabled, and the tokenizer used
    slow = model.tokenize(["q one", "q two"], [["a doc", "another doc here"], ["x"]])
    assert not model._pair_encoder().enabled
    assert fast["input_ids"].shape == slow["input_ids"].shape
    assert slow["attention_mask"][2, 0] == 0  # left-padded: the tokenizer's own output
