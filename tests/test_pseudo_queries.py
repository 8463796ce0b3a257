"""Title pseudo-queries for distillation: which titles qualify, reproducibility, mined groups."""

import json

import pytest

from rerankforge.data.groups import read_groups
from rerankforge.api import mine_config
from rerankforge.pipelines.steps import mine_cached
from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.mining.pseudo_queries import sentence_queries, split_sentences, title_queries

DOCS = [
    ("d1", "Vitamin D supplementation lowers fracture risk", "A trial of vitamin D in older adults."),
    ("d2", "Short title", "Too short a title to be a query."),
    ("d3", "Statins reduce cardiovascular mortality in adults", "A meta-analysis of statin trials."),
    ("d4", "Title of a document without a body", ""),
    ("d5", "Gut microbiota shapes immune development early", "Germ-free mice and immune cells."),
    ("d6", "Sleep deprivation impairs memory consolidation in young adults", "Sleep studies in students."),
    ("d7", None, "A body without a title at all."),
    # bodies sharing the titles' words, so BM25 finds negatives for every title query
    ("d8", "", "vitamin statins sleep gut memory fracture immune cardiovascular risk adults"),
    ("d9", "", "supplementation mortality deprivation microbiota consolidation development young"),
]


def write_collection(root, docs=DOCS, queries=(("q1", "vitamin d fractures"),), qrels=(("q1", "d1", 1),)):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": t, "text": b}) + "\n" for d, t, b in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries))
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return root


def test_titles_qualify_by_length_and_body(tmp_path):
    root = write_collection(tmp_path / "c")
    queries, qrels = title_queries(root, 100, seed=0)
    # d2 (2 words), d4 (no body) and d7 (no title) are not queries
    assert set(queries) == {"title:d1", "title:d3", "title:d5", "title:d6"}
    assert queries["title:d3"] == "Statins reduce cardiovascular mortality in adults"
    assert qrels == {q: {q.split(":", 1)[1]: 1} for q in queries}
    assert set(title_queries(root, 100, seed=0, min_words=7)[0]) == {"title:d6"}
    assert set(title_queries(root, 100, seed=0, exclude={"d1", "d3"})[0]) == {"title:d5", "title:d6"}


def test_sampling_is_reproducible_and_sized(tmp_path):
    root = write_collection(tmp_path / "c")
    a, _ = title_queries(root, 2, seed=7)
    assert len(a) == 2 and a == title_queries(root, 2, seed=7)[0]
    draws = {tuple(sorted(title_queries(root, 2, seed=s)[0])) for s in range(20)}
    assert len(draws) > 1  # the seed matters
    assert title_queries(root, 0)[0] == {}
    with pytest.raises(ConfigError):
        title_queries(root, -1)


def test_no_usable_title_is_an_error_and_bad_title_names_the_line(tmp_path):
    root = write_collection(tmp_path / "c", docs=[("d1", "Tiny", "body")])
    with pytest.raises(ConfigError, match="no document has a title"):
        title_queries(root, 3)
    bad = write_collection(tmp_path / "b", docs=[("d1", "Fine title for a query", "body"), ("d2", 5, "body")])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: .title. must be a string"):
        title_queries(bad, 3)


def test_mining_adds_title_groups(tmp_path):
    root = write_collection(tmp_path / "c")
    cache = tmp_path / "cache"
    first = mine_cached(mine_config(str(root), "train", depth=5, negatives=2, rank_max=5, pseudo={"titles": 3}), cache)
    groups = read_groups(first.path)
    assert [g.query_id for g in groups][0] == "q1" and len(groups) == 4
    for g in groups[1:]:
        doc = g.query_id.split(":", 1)[1]
        assert g.query_id.startswith("title:") and g.query == dict((d, t) for d, t, _ in DOCS)[doc]
        assert [c.doc_id for c in g.candidates if c.label] == [doc]  # its own document is the positive
        assert len(g.candidates) == 3 and all(c.text for c in g.candidates)
    # the settings are part of the cache key: the same settings reuse, more pseudo-queries re-mine
    again = mine_cached(mine_config(str(root), "train", depth=5, negatives=2, rank_max=5, pseudo={"titles": 3}), cache)
    assert again.reused and again.path == first.path
    more = mine_cached(mine_config(str(root), "train", depth=5, negatives=2, rank_max=5, pseudo={"titles": 4}), cache)
    assert not more.reused and len(read_groups(more.path)) == 5


SENTENCE_DOCS = [
    ("s1", "T", "Vitamin D lowers fracture risk in adults over seventy. It was a small trial. "
                "Statins, e.g. atorvastatin, reduce cardiovascular mortality in older adults with diabetes!"),
    ("s2", "T", "Short one. 2 of 3 patients improved after sleep therapy in the study group?"),
    ("s3", "T", ""),
]


def test_sentences_split_at_sentence_ends_only():
    # no split before a lower-case word ("e.g. the"); whitespace inside a sentence is normalised
    assert split_sentences("A b c. D e f! 3 g h? (i) j.  e.g. k l. Zed") == ["A b c.", "D e f!", "3 g h?",
                                                                            "(i) j. e.g. k l.", "Zed"]
    assert split_sentences("no end mark") == ["no end mark"] and split_sentences("  ") == []


def test_sentence_queries_qualify_by_length_and_keep_their_source(tmp_path):
    root = write_collection(tmp_path / "c", docs=SENTENCE_DOCS)
    queries, qrels = sentence_queries(root, 100, seed=0, min_words=6)
    assert queries == {
        "sent:s1:0": "Vitamin D lowers fracture risk in adults over seventy.",
        "sent:s1:2": "Statins, e.g. atorvastatin, reduce cardiovascular mortality in older adults with diabetes!",
        "sent:s2:1": "2 of 3 patients improved after sleep therapy in the study group?",
    }
    assert qrels == {"sent:s1:0": {"s1": 1}, "sent:s1:2": {"s1": 1}, "sent:s2:1": {"s2": 1}}
    assert set(sentence_queries(root, 100, min_words=6, max_words=9)[0]) == {"sent:s1:0"}
    assert set(sentence_queries(root, 100, min_words=6, exclude={"s1"})[0]) == {"sent:s2:1"}
    a = sentence_queries(root, 2, seed=3)[0]
    assert len(a) == 2 and a == sentence_queries(root, 2, seed=3)[0]
    with pytest.raises(ConfigError, match="no document body"):
        sentence_queries(root, 1, min_words=30)
    with pytest.raises(ConfigError):
        sentence_queries(root, 1, min_words=8, max_words=7)
    bad = write_collection(tmp_path / "b", docs=[("d1", "t", "A fine sentence of six words."), ("d2", "t", 7)])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: .text. must be a string"):
        sentence_queries(bad, 3)


def test_mining_adds_sentence_groups_without_texts(tmp_path):
    root = write_collection(tmp_path / "c")
    cfg = mine_config(str(root), "train", depth=5, negatives=2, rank_max=5, text=False,
                      pseudo={"titles": 2, "sentences": 3, "sentence_min_words": 4})
    groups = read_groups(mine_cached(cfg, tmp_path / "cache").path)
    kinds = [g.query_id.split(":")[0] if ":" in g.query_id else g.query_id for g in groups]
    assert kinds == ["q1", "title", "title", "sent", "sent", "sent"]  # real queries first
    for g in groups[3:]:
        source = g.query_id.split(":")[1]
        assert [c.doc_id for c in g.candidates if c.label] == [source]
        assert all(c.text is None for c in g.candidates)


def test_span_queries_are_spans_of_their_source_and_reproducible(tmp_path):
    from rerankforge.data.beir import doc_text
    from rerankforge.mining.pseudo_queries import span_queries

    root = write_collection(tmp_path / "c")
    texts = {d: " ".join(doc_text(t, b).split()) for d, t, b in DOCS}
    queries, qrels = span_queries(root, 5, seed=1, min_words=3, max_words=5)
    assert queries == span_queries(root, 5, seed=1, min_words=3, max_words=5)[0]
    for qid, text in queries.items():
        (doc,) = qrels[qid]
        assert qid == f"span:{doc}" and text in texts[doc]
        assert 3 <= len(text.split()) <= min(5, len(texts[doc].split()) // 2)
    with pytest.raises(ConfigError, match="span pseudo-queries are impossible"):
        span_queries(root, 1, min_words=50, max_words=60)


def test_adapt_cuts_the_query_out_of_its_document():
    from rerankforge.pipelines.adapt import _cut

    assert _cut("a b c a b d", "a b") == "c d"
    assert _cut("a b c", "x") == "a b c"
