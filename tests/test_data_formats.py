"""Malformed input gives an error naming the file and line (or a documented, counted skip)."""

import gzip
import json

import pytest

from rerankforge.data import Collection, load_corpus, load_qrels, load_queries, read_groups, read_run, write_run
from rerankforge.data.groups import Candidate, Group, write_groups
from rerankforge.errors import DataFormatError


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def doc(i, text="some text", title="t"):
    return json.dumps({"_id": str(i), "title": title, "text": text})


@pytest.fixture
def collection_dir(tmp_path):
    root = tmp_path / "coll"
    (root / "qrels").mkdir(parents=True)
    write_lines(root / "corpus.jsonl", [doc("d1", "alpha beta"), doc("d2", "gamma delta"), doc("d3", "epsilon")])
    write_lines(root / "queries.jsonl", [json.dumps({"_id": "q1", "text": "alpha"}), json.dumps({"_id": "q2", "text": "gamma"})])
    write_lines(root / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q2\td2\t1"])
    return root


def test_collection_loads(collection_dir):
    c = Collection(collection_dir)
    assert c.corpus.ids == ["d1", "d2", "d3"]
    assert c.corpus.text("d1") == "t alpha beta"
    assert c.qrels("test") == {"q1": {"d1": 2}, "q2": {"d2": 1}}
    assert list(c.split_queries("test")) == ["q1", "q2"]


def test_gzipped_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(doc("a") + "\n" + doc("b") + "\n")
    assert load_corpus(path).ids == ["a", "b"]


def test_invalid_json_names_line(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [doc(1), "{not json", doc(3)])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: invalid JSON"):
        load_corpus(path)


def test_missing_id_names_line(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [doc(1), json.dumps({"title": "x", "text": "y"})])
    with pytest.raises(DataFormatError, match=r":2: missing \"_id\""):
        load_corpus(path)


def test_duplicate_doc_id(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [doc(1), doc(2), doc(1)])
    with pytest.raises(DataFormatError, match=r":3: duplicate document id '1' \(first on line 1\)"):
        load_corpus(path)


def test_duplicate_query_id(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [json.dumps({"_id": "q", "text": "a"})] * 2)
    with pytest.raises(DataFormatError, match=r"q.jsonl:2: duplicate query id"):
        load_queries(path)


def test_empty_query_text(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [json.dumps({"_id": "q", "text": "  "})])
    with pytest.raises(DataFormatError, match=r":1: query 'q' has an empty"):
        load_queries(path)


def test_empty_documents_are_skipped_and_counted(tmp_path):
    path = write_lines(tmp_path / "corpus.jsonl", [doc(1), doc(2, text="", title=""), doc(3)])
    corpus = load_corpus(path)
    assert corpus.ids == ["1", "3"] and corpus.skipped_empty == 1


def test_qrels_judging_an_empty_document_drop_that_judgment(tmp_path):
    corpus = load_corpus(write_lines(tmp_path / "corpus.jsonl", [doc(1), doc(2, text="", title="")]))
    queries = {"q1": "a query"}
    qrels = load_qrels(write_lines(tmp_path / "qrels.tsv", ["q1\t1\t1", "q1\t2\t2"]), queries, corpus)
    assert qrels == {"q1": {"1": 1}}
    with pytest.raises(DataFormatError, match=r"bad.tsv:1: unknown document id '3'"):
        load_qrels(write_lines(tmp_path / "bad.tsv", ["q1\t3\t1"]), queries, corpus)


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes((doc(1) + "\n").encode() + b'{"_id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: invalid UTF-8"):
        load_corpus(path)


def test_qrels_unknown_query_and_doc(collection_dir):
    c = Collection(collection_dir)
    bad_q = write_lines(collection_dir / "qrels" / "bad.tsv", ["q1\td1\t1", "q9\td1\t1"])
    with pytest.raises(DataFormatError, match=r"bad.tsv:2: unknown query id 'q9'"):
        load_qrels(bad_q, c.queries, c.corpus)
    bad_d = write_lines(collection_dir / "qrels" / "bad2.tsv", ["q1\tdX\t1"])
    with pytest.raises(DataFormatError, match=r"bad2.tsv:1: unknown document id 'dX'"):
        load_qrels(bad_d, c.queries, c.corpus)


def test_qrels_trec_format_and_bad_fields(tmp_path):
    assert load_qrels(write_lines(tmp_path / "a.txt", ["q1 0 d1 2"])) == {"q1": {"d1": 2}}
    with pytest.raises(DataFormatError, match=r"b.txt:1: expected 3 \(BEIR\) or 4 \(TREC\) fields, got 2"):
        load_qrels(write_lines(tmp_path / "b.txt", ["q1 d1"]))
    with pytest.raises(DataFormatError, match=r"c.txt:1: relevance 'x'"):
        load_qrels(write_lines(tmp_path / "c.txt", ["q1 d1 x"]))


def test_run_roundtrip_sorted_by_score(tmp_path):
    path = tmp_path / "r.trec"
    write_run(path, {"q1": [("d2", 0.5), ("d1", 2.0)]}, tag="t")
    assert path.read_text().splitlines()[0] == "q1 Q0 d1 1 2.000000 t"
    assert read_run(path) == {"q1": [("d1", 2.0), ("d2", 0.5)]}


def test_run_wrong_field_count(tmp_path):
    path = write_lines(tmp_path / "r.trec", ["q1 Q0 d1 1 2.0 tag", "q1 Q0 d2 2 1.0"])
    with pytest.raises(DataFormatError, match=r"r.trec:2: expected 6 fields"):
        read_run(path)


def test_run_unknown_ids_and_duplicates(collection_dir, tmp_path):
    c = Collection(collection_dir)
    with pytest.raises(DataFormatError, match=r":1: unknown query id 'qq'"):
        read_run(write_lines(tmp_path / "a.trec", ["qq Q0 d1 1 1.0 t"]), c.queries, c.corpus)
    with pytest.raises(DataFormatError, match=r":1: unknown document id 'dd'"):
        read_run(write_lines(tmp_path / "b.trec", ["q1 Q0 dd 1 1.0 t"]), c.queries, c.corpus)
    with pytest.raises(DataFormatError, match=r":2: document 'd1' listed twice"):
        read_run(write_lines(tmp_path / "c.trec", ["q1 Q0 d1 1 1.0 t", "q1 Q0 d1 2 0.5 t"]))
    with pytest.raises(DataFormatError, match=r":1: rank 'x' / score '1.0' are not numbers"):
        read_run(write_lines(tmp_path / "d.trec", ["q1 Q0 d1 x 1.0 t"]))


def test_groups_roundtrip_and_text_interning(tmp_path):
    text = "shared document text"
    groups = [Group("q1", "query one", [Candidate("d1", text, 1.0, rank=3, score=1.5), Candidate("d2", "other", 0.0)]),
              Group("q2", "query two", [Candidate("d1", text, None, teacher=2.5)])]
    path = tmp_path / "g.jsonl"
    assert write_groups(path, groups) == 2
    back = read_groups(path)
    assert back[0].candidates[0] == groups[0].candidates[0]
    assert back[1].candidates[0].teacher == 2.5 and back[1].candidates[0].label is None
    # one string object per document id, however many groups hold it
    assert back[0].candidates[0].text is back[1].candidates[0].text
    assert json.loads(path.read_text().splitlines()[0])["schema"] == "rerankforge.group/1"


@pytest.mark.parametrize("bad, message", [
    ({"query_id": "q", "query": "x", "candidates": []}, "non-empty list"),
    ({"query_id": "q", "query": "x", "candidates": [{"text": "a"}]}, 'no "doc_id"'),
    ({"query_id": "q", "query": "x", "candidates": [{"doc_id": "a", "label": "high"}]}, "must be a number"),
    ({"query_id": "q", "query": "x", "candidates": [{"doc_id": "a"}, {"doc_id": "a"}]}, "appears twice"),
    ({"query_id": "q", "query": "", "candidates": [{"doc_id": "a"}]}, "empty query"),
    ({"schema": "rerankforge.group/9", "query_id": "q", "query": "x", "candidates": [{"doc_id": "a"}]}, "unsupported schema"),
    ({"query_id": "q", "query": "x", "candidates": [{"doc_id": "a", "lable": 1}]}, "unknown fields"),
])
def test_malformed_groups_name_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "g.jsonl", [json.dumps({"query_id": "ok", "query": "fine", "candidates": [{"doc_id": "z"}]}),
                                               json.dumps(bad)])
    with pytest.raises(DataFormatError, match=rf"g.jsonl:2: .*{message}"):
        read_groups(path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from rerankforge.utils.io import atomic_write

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_real_scifact_loads(scifact_dir):
    c = Collection(scifact_dir)
    assert len(c.corpus) == 5183
    assert len(c.qrels("train")) == 809 and len(c.qrels("test")) == 300
