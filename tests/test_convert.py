"""Converters from MS MARCO triples, FlagEmbedding and sentence-transformers data to groups,
and the ``convert`` verb."""

from __future__ import annotations

import csv
import hashlib
import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from rerankforge.cli import main  # noqa: E402
from rerankforge.data.convert import (CONVERTERS, convert, doc_id_for, flagembedding,  # noqa: E402
                                      msmarco_triples, query_id_for, st_hardneg)
from rerankforge.data.groups import Candidate, read_groups  # noqa: E402
from rerankforge.errors import ConfigError, DataFormatError  # noqa: E402


@pytest.fixture(scope="module")
def marco(shared_datasets):
    return shared_datasets / "msmarco-train-sample"


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _by_text(group):
    return {c.text: c for c in group.candidates}


# --- ids ------------------------------------------------------------------------------------

def test_ids_are_the_documented_sha1_prefixes():
    assert query_id_for("what is x") == "q" + hashlib.sha1(b"what is x").hexdigest()[:16]
    assert doc_id_for("caf\u00e9") == "d" + hashlib.sha1("caf\u00e9".encode()).hexdigest()[:16]
    assert doc_id_for("a") != doc_id_for("a ")  # exact bytes, no folding


# --- MS MARCO triples -----------------------------------------------------------------------

def test_msmarco_sample_one_group_per_query(marco):
    path = marco / "triples.train.small.head100.tsv"
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    groups = list(msmarco_triples(path))
    assert len(groups) == len({r[0] for r in rows}) == 100
    assert groups[0].query == "is a little caffeine ok during pregnancy"
    for group, (query, pos, neg) in zip(groups, rows):
        assert group.query == query and group.query_id == query_id_for(query)
        assert [(c.doc_id, c.text, c.label, c.teacher) for c in group.candidates] == [
            (doc_id_for(pos), pos, 1.0, None), (doc_id_for(neg), neg, 0.0, None)]
    assert "don\u00e2\u0080\u0099t" in groups[0].candidates[0].text  # MS MARCO's mojibake, kept as is
    assert [g.to_json() for g in msmarco_triples(path)] == [g.to_json() for g in groups]  # stable


def test_msmarco_merges_a_query_across_lines(tmp_path):
    path = _write(tmp_path / "t.tsv", ["q1\tP1\tN1", "q2\tP2\tN2", "q1\tP1\tN3", "", "q1\tN1\tN4",
                                       "q1\tN4\tP1"])
    groups = list(msmarco_triples(path))
    assert [g.query for g in groups] == ["q1", "q2"]
    labels = {c.text: c.label for c in groups[0].candidates}
    # N1 is a positive on line 5, P1 a negative on line 6: the higher label wins either way,
    # and each passage is listed once.
    assert labels == {"P1": 1.0, "N1": 1.0, "N3": 0.0, "N4": 1.0}
    assert len(groups[0].candidates) == 4


def test_msmarco_sorted_input_streams_the_same_groups(tmp_path):
    lines = ["a\tP1\tN1", "a\tP1\tN2", "b\tP2\tN1", "c\tP3\tN3"]
    path = _write(tmp_path / "s.tsv", lines)
    assert [g.to_json() for g in msmarco_triples(path, sorted_input=True)] == \
        [g.to_json() for g in msmarco_triples(path)]
    # A streamed group must come out before the input is exhausted.
    it = msmarco_triples(_write(tmp_path / "s2.tsv", lines + ["bad line"]), sorted_input=True)
    assert next(it).query == "a"
    unsorted = _write(tmp_path / "u.tsv", ["a\tP\tN", "b\tP\tN", "a\tP\tM"])
    with pytest.raises(DataFormatError, match=r"u\.tsv:3: query 'a' appears again.*not sorted"):
        list(msmarco_triples(unsorted, sorted_input=True))


@pytest.mark.parametrize("line, message", [
    ("query\tonly two", "expected 3 tab-separated fields"),
    ("q\tp\tn\textra", "got 4"),
    (" \tp\tn", "query must be a non-empty string"),
    ("q\tp\t", "negative must be a non-empty string"),
])
def test_msmarco_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.tsv", ["ok\tp\tn", line])
    with pytest.raises(DataFormatError, match=rf"bad\.tsv:2: .*{message}"):
        list(msmarco_triples(path))


def test_msmarco_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bin.tsv"
    path.write_bytes(b"q\tp\tn\nq\tp\xff\tn\n")
    with pytest.raises(DataFormatError, match=r"bin\.tsv:2: invalid UTF-8"):
        list(msmarco_triples(path))


def test_msmarco_id_form_with_queries_and_collection(tmp_path):
    queries = _write(tmp_path / "queries.tsv", ["10\tfirst query", "11\tsecond query"])
    collection = _write(tmp_path / "collection.tsv", ["1\tpassage one", "2\tpassage two", "3\tpassage three"])
    triples = _write(tmp_path / "ids.tsv", ["10\t1\t2", "11\t3\t1", "10\t1\t3"])
    groups = list(msmarco_triples(triples, queries=queries, collection=collection))
    assert [(g.query_id, g.query) for g in groups] == [("10", "first query"), ("11", "second query")]
    assert groups[0].candidates == [Candidate("1", "passage one", 1.0), Candidate("2", "passage two", 0.0),
                                    Candidate("3", "passage three", 0.0)]
    # Without a collection the candidates carry ids only, like any text-free group.
    text_free = list(msmarco_triples(triples, queries={"10": "first query", "11": "second query"}))
    assert text_free[1].candidates == [Candidate("3", None, 1.0), Candidate("1", None, 0.0)]

    missing = _write(tmp_path / "ids2.tsv", ["10\t1\t2", "10\t1\t9"])
    with pytest.raises(DataFormatError, match=r"ids2\.tsv:2: passage id '9' is not in the collection"):
        list(msmarco_triples(missing, queries=queries, collection=collection))
    with pytest.raises(DataFormatError, match=r"ids2\.tsv:1: query id '10' is not in the queries file"):
        list(msmarco_triples(missing, queries={"11": "q"}))
    bad_queries = _write(tmp_path / "q_bad.tsv", ["10\tok", "11 no tab"])
    with pytest.raises(DataFormatError, match=r"q_bad\.tsv:2: expected id<TAB>text"):
        list(msmarco_triples(triples, queries=bad_queries))
    with pytest.raises(ConfigError, match="needs queries"):
        list(msmarco_triples(triples, collection=collection))


# --- FlagEmbedding --------------------------------------------------------------------------

def test_flagembedding_sample_labels_and_teacher_scores(marco):
    path = marco / "flagembedding_hardneg_examples.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    groups = list(flagembedding(path))
    assert len(groups) == len(raw) == 10
    assert sum(len(g.candidates) for g in groups) == 260
    for g, obj in zip(groups, raw):
        assert g.query == obj["query"] and g.query_id == query_id_for(obj["query"])
        assert [c.text for c in g.candidates] == obj["pos"] + obj["neg"]
        assert [c.label for c in g.candidates] == [1.0] * len(obj["pos"]) + [0.0] * len(obj["neg"])
        assert [c.teacher for c in g.candidates] == obj["pos_scores"] + obj["neg_scores"]
        assert g.meta == {"prompt": obj["prompt"], "type": obj["type"]}
    assert len({g.query_id for g in groups}) == 10


def test_flagembedding_without_scores_and_repeated_queries(tmp_path):
    path = _write(tmp_path / "f.jsonl", [json.dumps({"query": "q", "pos": ["p"], "neg": ["n", "n", "p"]}),
                                         json.dumps({"query": "q", "pos": ["p2"], "neg": []})])
    first, second = flagembedding(path)
    # Duplicates within a line are listed once; a passage in pos and neg stays a positive.
    assert first.candidates == [Candidate(doc_id_for("p"), "p", 1.0), Candidate(doc_id_for("n"), "n", 0.0)]
    assert first.query_id == query_id_for("q") and second.query_id == query_id_for("q") + ".2"
    assert second.meta == {}


@pytest.mark.parametrize("obj, message", [
    ({"pos": ["p"], "neg": ["n"]}, 'missing "query"'),
    ({"query": "q", "neg": ["n"]}, 'missing "pos"'),
    ({"query": "q", "pos": "p", "neg": []}, '"pos" must be a list'),
    ({"query": "q", "pos": [], "neg": ["n"]}, '"pos" is empty'),
    ({"query": "q", "pos": ["p"], "neg": ["n"], "neg_scores": [1.0, 2.0]}, '"neg_scores" must be a list as long'),
    ({"query": "q", "pos": ["p"], "neg": ["n"], "pos_scores": ["high"]}, r'"pos_scores"\[0\] must be a number'),
    ({"query": "q", "pos": [""], "neg": []}, r'"pos"\[0\] must be a non-empty string'),
])
def test_flagembedding_malformed_lines_name_file_and_line(tmp_path, obj, message):
    good = json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]})
    path = _write(tmp_path / "bad.jsonl", [good, "", json.dumps(obj)])
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl:3: {message}"):
        list(flagembedding(path))


# --- sentence-transformers ------------------------------------------------------------------

ST_ROWS = [
    {"query": "q1", "positive": "p1", "negative_1": "n1", "negative_2": "n2", "scores": [9.0, 1.0, 2.0]},
    {"query": "q2", "positive": "p2", "negative_1": "n1", "negative_2": "n3", "scores": [8.0, 0.5, 0.25]},
    {"query": "q1", "positive": "p3", "negative_1": "n2", "negative_2": "n4", "scores": [7.0, 3.0, 4.0]},
]


def _check_st(groups):
    assert [g.query for g in groups] == ["q1", "q2"]
    q1 = _by_text(groups[0])
    assert {t: (c.label, c.teacher) for t, c in q1.items()} == {
        "p1": (1.0, 9.0), "n1": (0.0, 1.0), "n2": (0.0, 2.0), "p3": (1.0, 7.0), "n4": (0.0, 4.0)}
    assert groups[1].query_id == query_id_for("q2") and groups[1].candidates[0].doc_id == doc_id_for("p2")


def test_st_ntuple_jsonl_parquet_dataset_and_directory(tmp_path):
    jsonl = _write(tmp_path / "st.jsonl", [json.dumps(r) for r in ST_ROWS])
    _check_st(list(st_hardneg(jsonl)))

    from datasets import Dataset

    ds = Dataset.from_list(ST_ROWS)
    _check_st(list(st_hardneg(ds)))
    ds.to_parquet(str(tmp_path / "st.parquet"))
    _check_st(list(st_hardneg(tmp_path / "st.parquet")))
    ds.save_to_disk(str(tmp_path / "st-dir"))
    _check_st(list(st_hardneg(tmp_path / "st-dir")))


def test_st_triplets_with_anchor_in_csv_and_tsv(tmp_path):
    rows = [("anchor", "positive", "negative"), ("q1", "p, with comma", "n1"), ("q1", "p, with comma", "n2"),
            ("q2", "multi\nline", "n1")]
    with open(tmp_path / "st.csv", "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    groups = list(st_hardneg(tmp_path / "st.csv"))
    assert [(g.query, [(c.text, c.label) for c in g.candidates]) for g in groups] == [
        ("q1", [("p, with comma", 1.0), ("n1", 0.0), ("n2", 0.0)]), ("q2", [("multi\nline", 1.0), ("n1", 0.0)])]
    _write(tmp_path / "st.tsv", ["\t".join(r) for r in rows[:3]])
    assert [c.text for c in next(st_hardneg(tmp_path / "st.tsv")).candidates] == ["p, with comma", "n1", "n2"]


def test_st_labelled_pairs_and_lists(tmp_path):
    pairs = _write(tmp_path / "pairs.jsonl", [json.dumps({"query": "q", "passage": "a", "label": 1}),
                                              json.dumps({"query": "q", "passage": "b", "label": 0}),
                                              json.dumps({"query": "r", "passage": "a", "score": 0.7})])
    groups = list(st_hardneg(pairs, positive_column="passage"))
    assert [(c.text, c.label, c.teacher) for c in groups[0].candidates] == [("a", 1.0, None), ("b", 0.0, None)]
    # Scores without labels: ST's labelled-pair-with-scores mixes positives and negatives.
    assert [(c.text, c.label, c.teacher) for c in groups[1].candidates] == [("a", None, 0.7)]

    lists = _write(tmp_path / "lists.jsonl", [json.dumps({"anchor": "q", "positive": ["a", "b", "c"],
                                                          "labels": [1, 0, 0], "scores": [3.0, 2.0, 1.0]})])
    (group,) = st_hardneg(lists)
    assert [(c.text, c.label, c.teacher) for c in group.candidates] == [("a", 1.0, 3.0), ("b", 0.0, 2.0),
                                                                        ("c", 0.0, 1.0)]


def test_st_sorted_input_and_ignored_columns(tmp_path, caplog):
    path = _write(tmp_path / "s.jsonl", [json.dumps({**r, "id": k}) for k, r in enumerate(ST_ROWS)])
    with pytest.raises(DataFormatError, match=r"s\.jsonl:3: query 'q1' appears again"):
        list(st_hardneg(path, sorted_input=True))
    assert "ignoring columns ['id']" in caplog.text


@pytest.mark.parametrize("row, message", [
    ({"query": "q", "negative": "n"}, "no positive column 'positive'"),
    ({"text": "q", "positive": "p"}, "no query column"),
    ({"query": "q", "positive": "p", "negative": "n", "score": 1.5}, "ambiguous"),
    ({"query": "q", "positive": "p", "negative": "n", "scores": [1.0]}, r"2 passage\(s\) but 2 label\(s\) and 1"),
    ({"query": "q", "positive": None, "negative": "n"}, "'positive' must be a non-empty string"),
    ({"query": "q", "positive": "p", "negative": "n", "scores": ["x", 1]}, r"'scores'\[0\] must be a number"),
])
def test_st_malformed_rows_name_file_and_line(tmp_path, row, message):
    good = {k: v for k, v in ST_ROWS[0].items() if k != "scores"}
    path = _write(tmp_path / "bad.jsonl", [json.dumps(good) if "positive" in row and "query" in row else
                                           json.dumps(row), json.dumps(row)])
    line = 2 if "positive" in row and "query" in row else 1
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl:{line}: .*{message}"):
        list(st_hardneg(path))


def test_st_csv_and_arrow_errors_name_line_or_row(tmp_path):
    _write(tmp_path / "bad.csv", ["query,positive,negative", "q,p,n", "q,p", "q,p,n"])
    with pytest.raises(DataFormatError, match=r"bad\.csv:3: 2 fields, the header has 3"):
        list(st_hardneg(tmp_path / "bad.csv"))
    _write(tmp_path / "bad2.csv", ["query,positive,negative,scores", "q,p,n,\"[1, 2]\"", "q,p2,n,[1 2]"])
    with pytest.raises(DataFormatError, match=r"bad2\.csv:3: 'scores' is not a valid JSON list"):
        list(st_hardneg(tmp_path / "bad2.csv"))

    from datasets import Dataset

    ds = Dataset.from_list([{"query": "q", "positive": "p"}, {"query": " ", "positive": "p"}])
    with pytest.raises(DataFormatError, match="row 1: 'query' must be a non-empty string"):
        list(st_hardneg(ds))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        list(st_hardneg(tmp_path / "junk.parquet"))
    with pytest.raises(ConfigError, match="unknown file type"):
        list(st_hardneg(tmp_path / "data.xml"))


# --- registry and CLI -----------------------------------------------------------------------

def test_registry(marco):
    assert sorted(CONVERTERS) == ["flagembedding", "msmarco-triples", "st-hardneg"]
    groups = list(convert("flagembedding", marco / "flagembedding_hardneg_examples.jsonl"))
    assert len(groups) == 10
    with pytest.raises(ConfigError, match="unknown input format 'trec'"):
        convert("trec", "x")


def test_cli_convert_to_jsonl_and_arrow(marco, tmp_path, capsys):
    src = marco / "triples.train.small.head100.tsv"
    out = tmp_path / "groups.jsonl"
    assert main(["convert", "msmarco-triples", "--input", str(src), "--out", str(out)]) == 0
    assert "wrote 100 groups, 200 candidates (100 positives, 0 with teacher scores)" in capsys.readouterr().out
    assert [g.to_json() for g in read_groups(out)] == [g.to_json() for g in msmarco_triples(src)]

    from rerankforge.data.hf import GroupsView, load_groups_dataset

    flag = marco / "flagembedding_hardneg_examples.jsonl"
    assert main(["convert", "flagembedding", "--input", str(flag), "--out", str(tmp_path / "ds"), "--arrow"]) == 0
    assert "wrote 10 groups, 260 candidates (10 positives, 260 with teacher scores)" in capsys.readouterr().out
    assert GroupsView(load_groups_dataset(tmp_path / "ds"))[:] == list(flagembedding(flag))


def test_cli_convert_st_options_and_errors(tmp_path, capsys):
    src = _write(tmp_path / "st.jsonl", [json.dumps({"question": "q", "answer": "a", "negative": "n"})])
    out = tmp_path / "g.jsonl"
    assert main(["convert", "st-hardneg", "--input", str(src), "--out", str(out), "--query-column", "question",
                 "--positive-column", "answer", "--sorted"]) == 0
    assert [(c.text, c.label) for c in read_groups(out)[0].candidates] == [("a", 1.0), ("n", 0.0)]

    bad = _write(tmp_path / "bad.tsv", ["q\tp\tn", "q\tp"])
    assert main(["convert", "msmarco-triples", "--input", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.tsv:2: expected 3 tab-separated fields" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()  # atomic: nothing half-written
    assert main(["convert", "msmarco-triples", "--input", str(bad), "--out", str(tmp_path / "o"), "--arrow"]) == 2
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    empty = _write(tmp_path / "empty.tsv", [""])
    assert main(["convert", "msmarco-triples", "--input", str(empty), "--out", str(tmp_path / "e.jsonl")]) == 1
    assert "held no data lines" in capsys.readouterr().err
