import gzip
import json

import numpy as np
import pytest

from rerankforge.data.beir import load_corpus
from rerankforge.errors import DataFormatError
from rerankforge.retrieve.corpus import (CorpusStream, DocIds, corpus_batches, corpus_fingerprint, fetch_texts,
                                       normalize_text, text_key)


def write(path, rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


ROWS = [{"_id": "a", "title": "Alpha", "text": "first"}, {"_id": 7, "text": "seven"},
        {"_id": "e", "title": "", "text": ""}, {"_id": "b", "title": "Beta", "text": ""}]


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_stream_matches_load_corpus(tmp_path, name):
    path = write(tmp_path / name, ROWS)
    stream = CorpusStream(tmp_path)  # a directory finds corpus.jsonl[.gz]
    batches = list(stream.batches(2))
    assert [len(ids) for ids, _ in batches] == [2, 1]
    mem = load_corpus(path)
    assert [d for ids, _ in batches for d in ids] == mem.ids == ["a", "7", "b"]
    assert [t for _, texts in batches for t in texts] == mem.texts
    assert stream.skipped_empty == 1 and stream.empty_ids == {"e"}
    assert corpus_fingerprint(stream) == corpus_fingerprint(mem)
    assert list(corpus_batches(mem, 2)) == batches
    assert fetch_texts(stream, ["b", "zz", "a"]) == {"a": "Alpha first", "b": "Beta"}
    assert len(stream) == 3 and "7" in stream and "e" not in stream
    keys = stream.text_keys()
    assert keys.dtype == np.uint64 and keys[2] == np.uint64(text_key("Beta"))


def test_stream_errors_name_file_and_line(tmp_path):
    write(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"_id": "a", "text": "z"}])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:3: duplicate document id 'a'"):
        list(CorpusStream(tmp_path / "corpus.jsonl").batches(10))
    write(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "x"}, {"text": "y"}])
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:2: missing \"_id\""):
        list(CorpusStream(tmp_path / "corpus.jsonl").batches(10))
    write(tmp_path / "corpus.jsonl", [{"_id": "a", "text": 3}])
    with pytest.raises(DataFormatError, match=r":1: \"text\" must be a string"):
        list(CorpusStream(tmp_path / "corpus.jsonl").batches(10))
    write(tmp_path / "corpus.jsonl", [{"_id": "a", "text": ""}])
    with pytest.raises(DataFormatError, match="no documents"):
        list(CorpusStream(tmp_path / "corpus.jsonl").batches(10))
    with pytest.raises(FileNotFoundError):
        CorpusStream(tmp_path / "missing")


def test_doc_ids_lookup():
    ids = DocIds.from_list(["d10", "d2", "ünï", "d1"])
    np.testing.assert_array_equal(ids.rows(["d1", "zz", "ünï", "d10"]), [3, -1, 2, 0])
    assert ids[1] == "d2" and ids.take(np.array([2, 0])) == ["ünï", "d10"]
    assert "d2" in ids and "d3" not in ids and len(ids) == 4
    assert DocIds.from_list(["x", "y", "x"]).duplicates() == ["x"]
    assert DocIds.from_list([]).rows(["a"]).tolist() == [-1]


def test_text_key_ignores_case_accents_punctuation_and_spacing():
    assert normalize_text("  Héllo,   WORLD! -- tést_") == "hello world test"
    assert text_key("Héllo, WORLD!") == text_key("hello world")
    assert text_key("hello world") != text_key("hello worlds")
