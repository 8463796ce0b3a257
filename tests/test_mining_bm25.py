import math

import numpy as np
import pytest

from rerankforge.data.beir import Collection, Corpus
from rerankforge.errors import ConfigError
from rerankforge.retrieve import build_retriever
from rerankforge.retrieve.bm25 import Analyzer, BM25Retriever, bm25s_reference
from rerankforge.retrieve.corpus import CorpusStream


@pytest.fixture(scope="module")
def real(scifact_dir):
    return Collection(scifact_dir)


@pytest.fixture(scope="module")
def real_queries(scifact_dir, real):
    return real.split_queries("test")


def _index_matrix(model):
    import scipy.sparse as sp

    s = model.scores
    return sp.csc_matrix((s["data"], s["indices"], s["indptr"]), shape=(s["num_docs"], len(s["indptr"]) - 1))


def _assert_same_ranking(a, b, rtol=1e-5):
    """Same documents in the same order, except that documents with equal scores may swap."""
    assert a.keys() == b.keys()
    for qid in a:
        da, db = a[qid], b[qid]
        n = min(len(da), len(db))
        sa = np.array([s for _, s in da[:n]])
        sb = np.array([s for _, s in db[:n]])
        np.testing.assert_allclose(sa, sb, rtol=rtol, err_msg=qid)
        # outside tied score blocks the documents must match position by position
        for i in range(n):
            tied = np.isclose(sa, sa[i], rtol=rtol)
            if tied.sum() == 1:
                assert da[i][0] == db[i][0], (qid, i)
            else:
                block = np.flatnonzero(tied)
                if block.max() < n - 1:  # a block cut by the depth may contain different members
                    assert {da[j][0] for j in block} == {db[j][0] for j in block}, (qid, i)


def test_defaults_are_bm25s_defaults():
    r = BM25Retriever()
    assert (r.k1, r.b, r.method, r.stemmer, r.stopwords) == (1.5, 0.75, "lucene", "english", "en")
    assert isinstance(build_retriever("bm25"), BM25Retriever)


def test_hand_computed_scores():
    # two terms, three docs; lucene idf = ln(1 + (N - df + .5)/(df + .5)), tf part = tf / (k1 (1 - b + b dl/avgdl) + tf)
    corpus = Corpus(["a", "b", "c"], ["apple banana", "apple apple cherry", "cherry"])
    r = BM25Retriever(k1=1.2, b=0.75, stemmer=None, stopwords=None)
    r.index(corpus)
    n, avgdl = 3, 6 / 3

    def part(tf, dl, df):
        return math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (1.2 * (0.25 + 0.75 * dl / avgdl) + tf)

    run = r.search({"q": "apple"}, 10)
    expected = {"a": part(1, 2, 2), "b": part(2, 3, 2)}
    assert [d for d, _ in run["q"]] == sorted(expected, key=lambda d: -expected[d])
    for d, s in run["q"]:
        assert s == pytest.approx(expected[d], rel=1e-6)
    # documents sharing no term are not returned; repeated query terms count twice, like bm25s
    assert {d for d, _ in run["q"]} == {"a", "b"}
    twice = dict(r.search({"q": "apple apple"}, 10)["q"])
    assert twice["a"] == pytest.approx(2 * expected["a"], rel=1e-6)
    np.testing.assert_allclose(r.score("apple", ["a", "b", "c", "nope"]),
                               [expected["a"], expected["b"], 0.0, np.nan], rtol=1e-6)
    assert r.search({"q": "zebra"}, 10) == {"q": []}


def test_analyzer_matches_bm25s_tokenizer(real):
    import bm25s
    import Stemmer

    texts = real.corpus.texts[:300]
    ref = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False,
                         return_ids=False)
    a = Analyzer("english", "en")
    assert [a.terms(t) for t in texts] == ref


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_index_is_bit_identical_to_bm25s(real, method):
    corpus = Corpus(real.corpus.ids[:700], real.corpus.texts[:700])
    ours = BM25Retriever(method=method, index_batch_size=300)  # several batches: the vocabulary grows across them
    ours.index(corpus)
    ref, _ = bm25s_reference(corpus.texts, method=method)
    a, b = _index_matrix(ref), _index_matrix(ours.bm25s)
    # same terms, possibly different term ids: permute our columns into bm25s' vocabulary order
    inv = {v: t for t, v in ref.vocab_dict.items()}
    perm = [ours.analyzer.term_ids[inv[j]] for j in range(a.shape[1])]
    b = b[:, perm]
    assert a.nnz == b.nnz
    assert (a != b).nnz == 0  # bit-exact float32 impacts
    if method in ("bm25l", "bm25+"):
        np.testing.assert_array_equal(ref.nonoccurrence_array[: a.shape[1]],
                                      ours.bm25s.nonoccurrence_array[perm])


def test_search_matches_bm25s_retrieve(real, real_queries):
    corpus = real.corpus
    queries = real_queries
    r = BM25Retriever(batch_size=64)
    r.index(corpus)
    ours = r.search(queries, 50)
    r.scorer = "bm25s"  # bm25s.BM25.retrieve on the same index object
    theirs = r.search(queries, 50)
    _assert_same_ranking(ours, theirs)
    # and against plain bm25s with its own tokenizer and index
    import bm25s
    import Stemmer

    ref, _ = bm25s_reference(corpus.texts)
    qt = bm25s.tokenize(list(queries.values()), stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
    docs, scores = ref.retrieve(qt, k=50, show_progress=False)
    plain = {q: [(corpus.ids[j], float(s)) for j, s in zip(docs[i], scores[i]) if s > 0] for i, q in enumerate(queries)}
    _assert_same_ranking(ours, plain)


def test_rank_bm25_okapi_epsilon0_ranks_like_bm25s_robertson(real, real_queries):
    """rank-bm25 BM25Okapi(epsilon=0) == bm25s method="robertson" up to ties (and a constant k1+1 factor)."""
    import rank_bm25

    corpus = Corpus(real.corpus.ids[:600], real.corpus.texts[:600])
    queries = dict(list(real_queries.items())[:60])
    params = dict(k1=1.2, b=0.75, method="robertson")
    fast = BM25Retriever(**params)
    fast.index(corpus)
    slow = BM25Retriever(**params, backend="rank_bm25", epsilon=0.0)
    slow.index(corpus)
    run_fast = fast.search(queries, 30)
    run_slow = slow.search(queries, 30)
    scaled = {q: [(d, s / (1.2 + 1)) for d, s in docs] for q, docs in run_slow.items()}
    _assert_same_ranking(run_fast, scaled)
    # the libraries themselves, on identical tokens
    a = Analyzer()
    okapi = rank_bm25.BM25Okapi([a.terms(t) for t in corpus.texts], k1=1.2, b=0.75, epsilon=0.0)
    for qid in list(queries)[:10]:
        s = okapi.get_scores(a.terms(queries[qid])) / 2.2
        np.testing.assert_allclose(fast.score(queries[qid], corpus.ids), s, rtol=1e-5, atol=1e-6)


def test_stream_index_equals_memory_index(tmp_path, real, real_queries):
    import json

    path = tmp_path / "corpus.jsonl"
    with open(path, "w") as fh:
        for d, t in zip(real.corpus.ids, real.corpus.texts):
            fh.write(json.dumps({"_id": d, "title": "", "text": t}) + "\n")
    queries = dict(list(real_queries.items())[:40])
    a = BM25Retriever(index_batch_size=500)
    a.index(real.corpus)
    b = BM25Retriever(index_batch_size=333)
    b.index(CorpusStream(path))
    assert a.search(queries, 20) == b.search(queries, 20)


def test_config_errors():
    with pytest.raises(ConfigError, match="method"):
        BM25Retriever(method="bm99")
    with pytest.raises(ConfigError, match="rank_bm25"):
        BM25Retriever(backend="rank_bm25", method="lucene")
    with pytest.raises(ConfigError, match="stemmer"):
        BM25Retriever(stemmer="klingon").index(Corpus(["a"], ["text"]))
    with pytest.raises(ConfigError, match="stopwords"):
        BM25Retriever(stopwords="klingon").index(Corpus(["a"], ["text"]))
    with pytest.raises(RuntimeError, match="index"):
        BM25Retriever().search({"q": "x"}, 5)


def test_scifact_bm25_quality(scifact_dir):
    """BM25 (bm25s defaults) on SciFact test: nDCG@10 0.686 (published Lucene 0.679 uses k1=1.2)."""
    from rerankforge.eval import evaluate as evaluate_run

    c = Collection(scifact_dir)
    r = BM25Retriever()
    r.index(c.corpus)
    m = evaluate_run(c.qrels("test"), r.search(c.split_queries("test"), 100))
    assert m["nDCG@10"] == pytest.approx(0.686, abs=0.003)
    assert m["R@100"] > 0.9


def test_memory_bounded_query_groups_give_the_same_results():
    texts = [f"alpha beta {'gamma ' * (i % 5)} delta{i % 17} word{i}" for i in range(2000)]
    r = BM25Retriever()
    r.index(Corpus([f"d{i}" for i in range(2000)], texts))
    queries = [r.analyzer.encode_batch([t], grow=False)[1] for t in ["alpha gamma", "delta3 word5", "beta", "nothing"]]
    whole = r.sparse.topk(queries, 10)
    one_by_one = r.sparse.topk(queries, 10, max_postings=1)  # every query alone
    for (d1, s1), (d2, s2) in zip(whole, one_by_one):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(s1, s2)
    assert [len(d) for d, _ in whole] == [10, 10, 10, 0]
