import json

import numpy as np
import pytest

from rerankforge.data.beir import Collection, Corpus
from rerankforge.errors import ConfigError
from rerankforge.retrieve import build_retriever
from rerankforge.retrieve.corpus import CorpusStream
from rerankforge.retrieve.dense import DenseRetriever, Encoder, sentence_transformers_layout
from rerankforge.models.base import default_base_model


@pytest.fixture(scope="module")
def small_corpus(scifact_dir):
    c = Collection(scifact_dir)
    return Corpus(c.corpus.ids[:120], c.corpus.texts[:120]), {q: c.queries[q] for q in list(c.qrels("test"))[:12]}


def test_minilm_layout_is_read_from_the_checkpoint():
    layout = sentence_transformers_layout(__import__("pathlib").Path(default_base_model()))
    assert layout["pooling"] == "mean" and layout["normalize"] is True and layout["max_length"] == 256


def test_plain_checkpoint_gets_mean_pooling_and_l2_norm(tiny_bert_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    enc = Encoder(str(tiny_bert_dir), bf16=False)
    assert (enc.pooling, enc.normalize) == ("mean", True)
    texts = ["a short one", "a much longer text about something else entirely", "x"]
    got = enc.encode(texts, batch_size=2)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        f = tok(texts, padding=True, truncation=True, return_tensors="pt")
        h = model(**f).last_hidden_state
        m = f["attention_mask"].unsqueeze(-1).float()
        ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    cls = Encoder(str(tiny_bert_dir), pooling="cls", normalize=False, bf16=False).encode(texts)
    np.testing.assert_allclose(cls, h[:, 0].numpy(), atol=1e-5)


def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    texts = ["BM25 is a bag-of-words ranking function.", "Dense retrieval encodes queries and passages.",
             "The quick brown fox jumps over the lazy dog " * 20]
    ours = Encoder(bf16=False).encode(texts)
    theirs = SentenceTransformer(default_base_model(), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_embedding_cache_is_reused(tmp_path, tiny_bert_dir, small_corpus, monkeypatch):
    corpus, queries = small_corpus
    first = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, chunk_size=50)
    first.index(corpus)
    assert first.encoded_docs == len(corpus)
    assert len(list(first.cache_path.glob("rows-*.npy"))) == 3 and (first.cache_path / "meta.json").exists()
    run1 = first.search(queries, 10)

    calls = []
    real_encode = Encoder.encode

    def counting(self, texts, *a, **k):
        calls.append(len(texts))
        return real_encode(self, texts, *a, **k)

    monkeypatch.setattr(Encoder, "encode", counting)
    second = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, chunk_size=50)
    second.index(corpus)
    assert calls == [] and second.encoded_docs == 0  # no document was encoded
    assert second.search(queries, 10) == run1
    assert calls == [len(queries)]  # only the queries
    # a changed corpus is a different cache entry
    monkeypatch.undo()
    changed = Corpus(corpus.ids, [t + " (revised)" if i == 0 else t for i, t in enumerate(corpus.texts)])
    third = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, chunk_size=50)
    third.index(changed)
    assert third.encoded_docs == len(corpus) and third.cache_path != first.cache_path


def test_interrupted_encoding_resumes_from_finished_chunks(tmp_path, tiny_bert_dir, small_corpus):
    corpus, _ = small_corpus
    r = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, chunk_size=50)
    r.index(corpus)
    (r.cache_path / "meta.json").unlink()  # as if the run died after writing all chunks but one
    sorted(r.cache_path.glob("rows-*.npy"))[-1].unlink()
    again = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, chunk_size=50)
    again.index(corpus)
    assert again.encoded_docs == len(corpus) - 100


def test_env_var_sets_the_cache_root(tmp_path, tiny_bert_dir, monkeypatch):
    monkeypatch.setenv("RERANKFORGE_CACHE", str(tmp_path / "c"))
    r = DenseRetriever(str(tiny_bert_dir))
    r.index(Corpus(["a", "b"], ["first text", "second text"]))
    assert r.cache_path.parent == tmp_path / "c" / "embeddings"


def test_search_scores_are_inner_products_and_indexes_agree(tmp_path, tiny_bert_dir, small_corpus):
    corpus, queries = small_corpus
    flat = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, bf16=False)
    flat.index(corpus)
    run = flat.search(queries, 20)
    emb = flat.embeddings(np.arange(len(corpus)))
    for qid, docs in run.items():
        q = flat.encoder.encode_queries([queries[qid]])[0]
        brute = emb @ q
        order = np.argsort(-brute)[:20]
        np.testing.assert_allclose([s for _, s in docs], brute[order], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(flat.score(queries[qid], [d for d, _ in docs]), [s for _, s in docs], atol=1e-5)
    # IVF probing every list and HNSW with a wide beam are exact on 120 documents
    ivf = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, bf16=False, index="ivf", nlist=4, nprobe=4)
    ivf.index(corpus)
    hnsw = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path, bf16=False, index="hnsw", ef_search=200)
    hnsw.index(corpus)
    for other in (ivf, hnsw):
        got = other.search(queries, 20)
        for qid in run:
            np.testing.assert_allclose([s for _, s in got[qid]], [s for _, s in run[qid]], atol=1e-5)


def test_stream_and_memory_corpus_share_the_cache(tmp_path, tiny_bert_dir, small_corpus):
    corpus, _ = small_corpus
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in zip(corpus.ids, corpus.texts)))
    a = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path / "cache")
    a.index(corpus)
    b = DenseRetriever(str(tiny_bert_dir), cache_dir=tmp_path / "cache")
    b.index(CorpusStream(path))
    assert b.encoded_docs == 0 and b.cache_path == a.cache_path


def test_hybrid_fuses_components(tmp_path, tiny_bert_dir, small_corpus):
    from rerankforge.retrieve.fusion import rrf

    corpus, queries = small_corpus
    h = build_retriever("hybrid", components=[{"name": "bm25"}, {"name": "dense", "model": str(tiny_bert_dir),
                                                                 "cache_dir": str(tmp_path)}], rrf_k=10, candidates=30)
    h.index(corpus)
    got = h.search(queries, 15)
    parts = [c.search(queries, 30) for c in h.components]
    assert got == rrf(parts, k=10, depth=15)
    with pytest.raises(ConfigError):
        build_retriever("hybrid", components=[{"name": "bm25"}])
    with pytest.raises(ConfigError):
        build_retriever("dense", index="lsh")


@pytest.mark.slow
def test_scifact_dense_and_hybrid_quality(scifact_dir):
    """SciFact test with the bundled MiniLM-L6 (embeddings cached under the default cache dir):
    dense nDCG@10 >= 0.64; hybrid BM25 + dense RRF nDCG@10 >= 0.70 and R@100 >= 0.94."""
    from rerankforge.retrieve.hybrid import HybridRetriever
    from rerankforge.eval import evaluate as evaluate_run

    c = Collection(scifact_dir)
    queries, qrels = c.split_queries("test"), c.qrels("test")
    dense = DenseRetriever()
    dense.index(c.corpus)
    m_dense = evaluate_run(qrels, dense.search(queries, 100))
    assert m_dense["nDCG@10"] >= 0.64
    from rerankforge.retrieve.bm25 import BM25Retriever

    hybrid = HybridRetriever([BM25Retriever(), dense], fusion="rrf", rrf_k=60)
    hybrid.components[0].index(c.corpus)
    m_hybrid = evaluate_run(qrels, hybrid.search(queries, 100))
    assert m_hybrid["nDCG@10"] >= 0.70 and m_hybrid["R@100"] >= 0.94
