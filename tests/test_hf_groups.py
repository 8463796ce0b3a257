"""Groups <-> Hugging Face datasets: exact round trips, lazy row decoding, atomic saves."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402
from datasets import Dataset, Features, Value  # noqa: E402

from rerankforge.data.groups import Candidate, Group, read_groups, write_groups  # noqa: E402
from rerankforge.data.hf import (GroupsView, groups_features, groups_to_dataset,  # noqa: E402
                                 load_groups_dataset, save_groups_dataset)
from rerankforge.errors import ConfigError, DataFormatError  # noqa: E402


def _groups() -> list[Group]:
    """Every field set somewhere, every optional field None somewhere, awkward values included."""
    return [
        Group("q1", "naïve query ☃", [
            Candidate("d1", "text one", 1.0, 3.25, 1, 17.125, 0.5, 2.0),
            Candidate("d2"),
            Candidate("d3", "text three", 0.0, -1e-300, 3, None, None, 0.1),
        ], {"source": "bm25", "nested": {"k": [1, 2.5, None]}}),
        Group("q2", "second", [Candidate("x", "only", label=2.0)]),
        Group("7", "third", [Candidate("a", teacher=1 / 3), Candidate("b", rank=2, propensity=0.123456789)],
              {"n": 1}),
    ]


def _dataset(tmp_path, groups=None) -> Dataset:
    return groups_to_dataset(iter(groups if groups is not None else _groups()), cache_dir=tmp_path / "cache")


def test_features_describe_the_group_schema():
    f = groups_features()
    assert list(f) == ["query_id", "query", "candidates", "meta"]
    assert f["meta"] == Value("string")
    assert f["candidates"].feature["rank"] == Value("int64")
    assert f["candidates"].feature["teacher"] == Value("float64")


def test_round_trip_through_arrow_is_exact(tmp_path):
    groups = _groups()
    ds = _dataset(tmp_path)
    assert ds.features == groups_features()
    assert ds.cache_files, "the dataset should be memory-mapped from an Arrow file, not held in memory"
    assert list(GroupsView(ds)) == groups
    assert [GroupsView(ds)[i] for i in range(3)] == groups

    out = tmp_path / "saved"
    assert save_groups_dataset(groups, out) == 3
    view = GroupsView(load_groups_dataset(out))
    assert len(view) == 3
    assert view[:] == groups
    assert view[-1] == groups[-1] and view[0].candidates[1] == Candidate("d2")
    assert view[2].candidates[0].teacher == 1 / 3  # float64, bit-identical
    with pytest.raises(IndexError):
        view[3]


def test_jsonl_loads_through_an_arrow_cache_and_rebuilds_when_the_file_changes(tmp_path):
    path = tmp_path / "groups.jsonl"
    write_groups(path, _groups())
    ds = load_groups_dataset(path, cache_dir=tmp_path / "cache")
    assert list(GroupsView(ds)) == read_groups(path)
    again = load_groups_dataset(path, cache_dir=tmp_path / "cache")
    assert again.cache_files == ds.cache_files  # reused, not parsed again

    write_groups(path, _groups()[:2])
    os.utime(path, ns=(1, 1))
    changed = load_groups_dataset(path, cache_dir=tmp_path / "cache")
    assert len(changed) == 2 and changed.cache_files != ds.cache_files


def test_jsonl_errors_name_file_and_line_not_a_datasets_wrapper(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(_groups()[1].to_json())
    path.write_text(good + "\n" + good.replace('"second"', '""') + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: empty query text"):
        load_groups_dataset(path, cache_dir=tmp_path / "cache")


def test_view_decodes_only_the_rows_asked_for(tmp_path, monkeypatch):
    ds = _dataset(tmp_path, [Group(f"q{i}", f"query {i}", [Candidate(f"d{i}")]) for i in range(50)])
    asked = []
    real = Dataset.__getitem__

    def spy(self, key):
        asked.append(key)
        return real(self, key)

    def no_scans(self, *a, **k):
        raise AssertionError("GroupsView scanned the dataset")

    monkeypatch.setattr(Dataset, "__getitem__", spy)
    monkeypatch.setattr(Dataset, "__iter__", no_scans)
    monkeypatch.setattr(Dataset, "iter", no_scans)
    monkeypatch.setattr(Dataset, "to_list", no_scans)
    view = GroupsView(ds)
    assert len(view) == 50 and asked == []
    assert view[7].query_id == "q7" and view[-1].query_id == "q49"
    assert asked == [7, 49]


def test_a_bad_row_fails_only_when_read_and_names_its_index(tmp_path):
    rows = {"query_id": ["a", "b", "c"], "query": ["ok", "ok", "  "],
            "candidates": [[{"doc_id": "d"}], [{"doc_id": "d"}, {"doc_id": "d"}], [{"doc_id": "e"}]]}
    view = GroupsView(Dataset.from_dict(rows), source="mine.arrow")
    assert view[0].query_id == "a"  # rows 1 and 2 are bad, but nothing checked them yet
    with pytest.raises(DataFormatError, match=r"mine\.arrow: row 1: document 'd' appears twice"):
        view[1]
    with pytest.raises(DataFormatError, match="row 2: empty query text"):
        view[2]
    seen = []
    with pytest.raises(DataFormatError, match="row 1"):
        for g in view:
            seen.append(g.query_id)
    assert seen == ["a"]


def test_nulls_read_as_missing_not_as_the_string_none():
    rows = {"query_id": [None, "b"], "query": ["x", "y"], "candidates": [[{"doc_id": "d"}], [{"doc_id": None}]]}
    view = GroupsView(Dataset.from_dict(rows))
    with pytest.raises(DataFormatError, match='row 0: missing "query_id"'):
        view[0]
    with pytest.raises(DataFormatError, match='row 1: candidate 0 has no "doc_id"'):
        view[1]


def test_bad_meta_and_values_are_rejected_like_parse_group(tmp_path):
    rows = {"query_id": ["a", "b", "c"], "query": ["x", "y", "z"],
            "candidates": [[{"doc_id": "d", "rank": 0}], [{"doc_id": "d", "rank": 1}], [{"doc_id": "d", "rank": 2}]],
            "meta": [None, "{not json", "[1]"]}
    view = GroupsView(Dataset.from_dict(rows))
    with pytest.raises(DataFormatError, match="row 0: candidate 0 rank must be a positive integer"):
        view[0]
    with pytest.raises(DataFormatError, match="row 1: meta is not valid JSON"):
        view[1]
    with pytest.raises(DataFormatError, match="row 2: meta must be a JSON object"):
        view[2]


def test_view_accepts_datasets_missing_optional_columns():
    ds = Dataset.from_dict({"query_id": [1, 2], "query": ["q one", "q two"], "extra": ["x", "y"],
                            "candidates": [[{"doc_id": "d1", "label": 1}], [{"doc_id": "d2", "label": 0}]]})
    view = GroupsView(ds.with_format("numpy"))
    assert view[:] == [Group("1", "q one", [Candidate("d1", label=1.0)]),
                       Group("2", "q two", [Candidate("d2", label=0.0)])]
    assert isinstance(view[0].candidates[0].label, float)
    # The legacy Sequence({...}) layout stores candidates column-wise.
    feats = Features({"query_id": Value("string"), "query": Value("string"),
                      "candidates": datasets.Sequence({"doc_id": Value("string"), "teacher": Value("float32")})})
    legacy = Dataset.from_dict({"query_id": ["q"], "query": ["t"],
                                "candidates": [{"doc_id": ["a", "b"], "teacher": [0.5, None]}]}, features=feats)
    assert GroupsView(legacy)[0].candidates == [Candidate("a", teacher=0.5), Candidate("b")]


def test_view_rejects_datasets_that_are_not_groups():
    with pytest.raises(DataFormatError, match=r"no column\(s\) \['candidates'\]"):
        GroupsView(Dataset.from_dict({"query_id": ["a"], "query": ["b"]}))
    with pytest.raises(DataFormatError, match=r"unknown fields \['title'\]"):
        GroupsView(Dataset.from_dict({"query_id": ["a"], "query": ["b"],
                                      "candidates": [[{"doc_id": "d", "title": "t"}]]}))
    with pytest.raises(DataFormatError, match="list of structs"):
        GroupsView(Dataset.from_dict({"query_id": ["a"], "query": ["b"], "candidates": [["d"]]}))


def _bad_groups(n_good: int):
    for g in _groups()[:n_good]:
        yield g
    raise DataFormatError("in.jsonl", 42, "boom")


def _leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_failed_save_leaves_nothing_behind(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(DataFormatError, match="in.jsonl:42: boom"):
        save_groups_dataset(_bad_groups(2), out)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_failed_save_keeps_the_previous_dataset(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    save_groups_dataset(_groups(), out)
    with pytest.raises(DataFormatError):
        save_groups_dataset(_bad_groups(1), out)
    assert GroupsView(load_groups_dataset(out))[:] == _groups()

    real = Dataset.save_to_disk

    def crash_midway(self, path, **kw):
        real(self, path, **kw)
        open(os.path.join(path, "state.json"), "w").close()  # a half-written directory
        raise OSError("disk full")

    monkeypatch.setattr(Dataset, "save_to_disk", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_groups_dataset(_groups()[:1], out)
    monkeypatch.undo()
    assert GroupsView(load_groups_dataset(out))[:] == _groups()
    assert _leftovers(tmp_path) == []

    save_groups_dataset(_groups()[1:], out)  # a successful save replaces it
    assert GroupsView(load_groups_dataset(out))[:] == _groups()[1:]
    assert _leftovers(tmp_path) == []


def test_save_refuses_to_replace_other_directories_and_handles_empty_input(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a saved dataset"):
        save_groups_dataset(_groups(), other)
    assert (other / "notes.txt").read_text() == "keep me"

    assert save_groups_dataset(iter([]), tmp_path / "empty") == 0
    assert len(GroupsView(load_groups_dataset(tmp_path / "empty"))) == 0

    ds = _dataset(tmp_path)
    assert save_groups_dataset(ds, tmp_path / "from-ds") == 3
    assert GroupsView(load_groups_dataset(tmp_path / "from-ds"))[:] == _groups()


def test_load_rejects_directories_that_are_not_datasets(tmp_path):
    with pytest.raises(DataFormatError, match="not a datasets save_to_disk directory"):
        load_groups_dataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_groups_dataset(tmp_path / "missing.jsonl")
