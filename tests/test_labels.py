"""Label jobs: graded gain maps, teacher scores, resumability (kill mid-way + rerun), CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_collection, make_groups
from rerankforge.cli import main
from rerankforge.data.groups import read_groups, write_groups
from rerankforge.data.labels import parse_gain_map
from rerankforge.errors import ConfigError
from rerankforge.labels import partial_path, run_label_job
from rerankforge.labels.graded import GradedLabeler
from rerankforge.labels.teacher import TeacherLabeler


class Killed(RuntimeError):
    pass


def kill_after(n_batches):
    def hook(batch_index, computed):
        if batch_index + 1 == n_batches:
            raise Killed(f"killed after {n_batches} batches")

    return hook


class Recording:
    """Wraps a labeler and records which queries it was asked to compute."""

    def __init__(self, inner):
        self.inner = inner
        self.kind, self.fields, self.needs_text = inner.kind, inner.fields, inner.needs_text
        self.seen = []

    def settings(self):
        return self.inner.settings()

    def label(self, groups, texts):
        self.seen += [g.query_id for g in groups]
        return self.inner.label(groups, texts)

    def close(self):
        self.inner.close()


@pytest.fixture
def groups_file(tmp_path):
    groups = make_groups(n=10, size=4, seed=3)
    for g in groups:  # mined groups: no teacher scores yet
        for c in g.candidates:
            c.teacher = None
    path = tmp_path / "mined.jsonl"
    write_groups(path, groups)
    return path


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_bert_dir):
    from rerankforge.models.cross_encoder import CrossEncoder

    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("teacher")
    CrossEncoder.from_base(str(tiny_bert_dir), max_length=48).save_pretrained(path)
    return path


def test_parse_gain_map():
    assert parse_gain_map("1:1,2:3") == {1: 1.0, 2: 3.0}
    assert parse_gain_map({"2": 5}) == {2: 5.0}
    assert parse_gain_map(None) == {}
    with pytest.raises(ConfigError, match="GRADE:GAIN"):
        parse_gain_map("1=2")


@pytest.mark.parametrize("unjudged,expected_unjudged", [("zero", 0.0), ("none", None)])
def test_graded_gain_map(tmp_path, groups_file, unjudged, expected_unjudged):
    groups = read_groups(groups_file)
    q0, q1 = groups[0], groups[1]
    qrels = {q0.query_id: {q0.candidates[0].doc_id: 2, q0.candidates[1].doc_id: 1, "not-a-candidate": 2},
             q1.query_id: {q1.candidates[2].doc_id: 0}}
    out = tmp_path / "graded.jsonl"
    summary = run_label_job(GradedLabeler(qrels, {2: 3.0}, unjudged), groups_file, out, progress=False)
    labelled = {g.query_id: g for g in read_groups(out)}
    a = labelled[q0.query_id].candidates
    assert [a[0].label, a[1].label] == [3.0, 1.0]  # 2 -> 3 through the map, 1 passes through
    assert a[2].label == expected_unjudged and a[3].label == expected_unjudged
    assert labelled[q1.query_id].candidates[2].label == 0.0  # judged non-relevant stays 0
    assert labelled[q1.query_id].candidates[0].label == expected_unjudged
    assert summary.info == {"judged_pairs": 3, "unjudged_pairs": 37}
    # everything else survives untouched
    assert [c.text for c in a] == [c.text for c in q0.candidates]
    assert [c.rank for c in a] == [c.rank for c in q0.candidates]
    assert not partial_path(out).exists()


def test_graded_cli_with_collection_split(tmp_path, groups_file):
    groups = read_groups(groups_file)
    coll = make_collection(tmp_path / "coll", groups, split="dev")
    out = tmp_path / "graded.jsonl"
    cfg = tmp_path / "label.yaml"
    cfg.write_text(f"collection: {coll}\nsplit: dev\ngain: {{1: 4.0}}\nbatch_queries: 3\n")
    rc = main(["label", "graded", "--config", str(cfg), "--groups", str(groups_file), "--out", str(out),
               "--unjudged", "none", "--no-progress"])
    assert rc == 0
    for g_in, g_out in zip(groups, read_groups(out)):
        for a, b in zip(g_in.candidates, g_out.candidates):
            assert b.label == (4.0 if a.label else None)


def test_teacher_scores_equal_score_pairs(tmp_path, groups_file, teacher_dir):
    from rerankforge.models import load_reranker

    out = tmp_path / "teacher.jsonl"
    summary = run_label_job(TeacherLabeler(teacher_dir, batch_size=5, bf16=False), groups_file, out,
                            batch_queries=4, progress=False)
    assert summary.pairs == 40 and summary.computed == 10 and summary.pairs_per_s > 0
    model = load_reranker(teacher_dir)
    groups = read_groups(groups_file)
    expected = model.score_pairs([g.query for g in groups for _ in g.candidates],
                                 [c.text for g in groups for c in g.candidates], bf16=False)
    got = np.array([c.teacher for g in read_groups(out) for c in g.candidates])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # bf16 (the default) stays close to fp32
    out16 = tmp_path / "teacher16.jsonl"
    run_label_job(TeacherLabeler(teacher_dir), groups_file, out16, progress=False)
    got16 = np.array([c.teacher for g in read_groups(out16) for c in g.candidates])
    assert np.abs(got16 - expected).max() < 0.05 * (np.abs(expected).max() + 1)


def test_killed_job_resumes_without_recomputing(tmp_path, groups_file, teacher_dir):
    reference = tmp_path / "reference.jsonl"
    run_label_job(TeacherLabeler(teacher_dir, bf16=False), groups_file, reference, batch_queries=3, progress=False)

    out = tmp_path / "out.jsonl"
    first = Recording(TeacherLabeler(teacher_dir, bf16=False))
    with pytest.raises(Killed):
        run_label_job(first, groups_file, out, batch_queries=3, progress=False, after_batch=kill_after(2))
    assert not out.exists()  # nothing half-written
    assert len(partial_path(out).read_text().splitlines()) == 1 + 6  # header + 2 batches of 3 queries
    all_ids = [g.query_id for g in read_groups(groups_file)]
    assert first.seen == all_ids[:6]

    second = Recording(TeacherLabeler(teacher_dir, bf16=False))
    summary = run_label_job(second, groups_file, out, batch_queries=3, progress=False)
    assert second.seen == all_ids[6:]  # only the rest is computed
    assert (summary.resumed, summary.computed, summary.pairs) == (6, 4, 16)
    assert not partial_path(out).exists()
    assert out.read_text() == reference.read_text()

    # A finished job run again computes nothing, unless asked to start over (or its output changed).
    again = Recording(TeacherLabeler(teacher_dir, bf16=False))
    summary = run_label_job(again, groups_file, out, batch_queries=3, progress=False)
    assert again.seen == [] and (summary.resumed, summary.computed) == (10, 0)
    out.write_text(out.read_text() + "\n")  # any change to the output invalidates the stamp
    edited = Recording(TeacherLabeler(teacher_dir, bf16=False))
    run_label_job(edited, groups_file, out, batch_queries=3, progress=False)
    assert edited.seen == all_ids and out.read_text() == reference.read_text()
    third = Recording(TeacherLabeler(teacher_dir, bf16=False))
    run_label_job(third, groups_file, out, batch_queries=3, progress=False, restart=True)
    assert third.seen == all_ids


def test_resume_drops_a_torn_last_record(tmp_path, groups_file):
    qrels = {g.query_id: {g.candidates[0].doc_id: 1} for g in read_groups(groups_file)}
    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        run_label_job(GradedLabeler(qrels), groups_file, out, batch_queries=4, progress=False,
                      after_batch=kill_after(1))
    with open(partial_path(out), "a") as fh:  # a kill in the middle of writing a record
        fh.write('{"query_id": "q4", "values": {"lab')
    rec = Recording(GradedLabeler(qrels))
    summary = run_label_job(rec, groups_file, out, batch_queries=4, progress=False)
    assert summary.resumed == 4 and rec.seen == [f"q{i}" for i in range(4, 10)]
    assert all(g.candidates[0].label == 1.0 for g in read_groups(out))


def test_partial_of_another_job_is_refused(tmp_path, groups_file):
    qrels = {g.query_id: {g.candidates[0].doc_id: 2} for g in read_groups(groups_file)}
    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        run_label_job(GradedLabeler(qrels, {2: 3.0}), groups_file, out, batch_queries=4, progress=False,
                      after_batch=kill_after(1))
    with pytest.raises(ConfigError, match="different job.*settings"):
        run_label_job(GradedLabeler(qrels, {2: 7.0}), groups_file, out, progress=False)
    summary = run_label_job(GradedLabeler(qrels, {2: 7.0}), groups_file, out, progress=False, restart=True)
    assert summary.resumed == 0
    assert read_groups(out)[0].candidates[0].label == 7.0


def test_candidates_without_text_need_a_collection(tmp_path, teacher_dir):
    groups = make_groups(n=3, size=3)
    coll = make_collection(tmp_path / "coll", groups)
    for g in groups:
        for c in g.candidates:
            c.text = None
    path = tmp_path / "notext.jsonl"
    write_groups(path, groups)
    with pytest.raises(ConfigError, match="has no text; pass --collection"):
        run_label_job(TeacherLabeler(teacher_dir), path, tmp_path / "o.jsonl", progress=False)
    rc = main(["label", "teacher", "--groups", str(path), "--out", str(tmp_path / "o.jsonl"), "--model",
               str(teacher_dir), "--collection", str(coll), "--no-bf16", "--no-progress"])
    assert rc == 0
    labelled = read_groups(tmp_path / "o.jsonl")
    assert all(c.teacher is not None and c.text is None for g in labelled for c in g.candidates)


def test_cli_errors_are_reported(tmp_path, groups_file, capsys):
    rc = main(["label", "teacher", "--groups", str(groups_file), "--out", str(tmp_path / "o.jsonl")])
    assert rc == 2 and "needs --model" in capsys.readouterr().err
    rc = main(["label", "graded", "--groups", str(groups_file), "--out", str(groups_file), "--qrels", "x"])
    assert rc == 2
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("unjudged: zero\nno_such_key: 1\n")
    rc = main(["label", "graded", "--config", str(cfg), "--groups", str(groups_file), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no_such_key" in err


def test_sigkill_mid_job_then_resume(tmp_path, groups_file):
    """A real kill -9 after two batches: the finished queries survive on disk, the rerun does the rest."""
    import os
    import subprocess
    import sys

    qrels = {g.query_id: {g.candidates[1].doc_id: 2} for g in read_groups(groups_file)}
    (tmp_path / "qrels.json").write_text(json.dumps(qrels))
    out = tmp_path / "out.jsonl"
    script = f"""
import json, os, signal
from rerankforge.labels import run_label_job
from rerankforge.labels.graded import GradedLabeler
qrels = json.load(open({str(tmp_path / "qrels.json")!r}))
def hook(b, n):
    if b == 1:
        os.kill(os.getpid(), signal.SIGKILL)
run_label_job(GradedLabeler(qrels, {{2: 3.0}}), {str(groups_file)!r}, {str(out)!r}, batch_queries=3,
              progress=False, after_batch=hook)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == -9
    assert not out.exists()
    rec = Recording(GradedLabeler(qrels, {2: 3.0}))
    summary = run_label_job(rec, groups_file, out, batch_queries=3, progress=False)
    assert summary.resumed == 6 and rec.seen == [f"q{i}" for i in range(6, 10)]
    assert [g.candidates[1].label for g in read_groups(out)] == [3.0] * 10


def test_repeated_query_ids_are_labelled_separately(tmp_path):
    from rerankforge.data.groups import Candidate, Group

    groups = [Group("q", "query one", [Candidate("a", "x"), Candidate("b", "y")]),
              Group("q", "query one", [Candidate("b", "y"), Candidate("c", "z")])]
    path = tmp_path / "dup.jsonl"
    write_groups(path, groups)
    out = tmp_path / "out.jsonl"
    with pytest.raises(Killed):
        run_label_job(GradedLabeler({"q": {"b": 1, "c": 2}}), path, out, batch_queries=1, progress=False,
                      after_batch=kill_after(1))
    rec = Recording(GradedLabeler({"q": {"b": 1, "c": 2}}))
    summary = run_label_job(rec, path, out, batch_queries=1, progress=False)
    assert summary.resumed == 1 and len(rec.seen) == 1
    assert [[c.label for c in g.candidates] for g in read_groups(out)] == [[0.0, 1.0], [1.0, 2.0]]
