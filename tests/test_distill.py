"""Distillation: layer-subset student init and a tiny end-to-end run with its report."""

import json

import numpy as np
import pytest
import torch

from helpers import make_collection, make_groups
from rerankforge.cli import main
from rerankforge.data.groups import read_groups, write_groups
from rerankforge.pipelines.distill import init_student_from_layers, subset_layers
from rerankforge.errors import ConfigError
from rerankforge.models import load_reranker


@pytest.fixture(scope="module")
def teacher6(tmp_path_factory):
    """A tiny random 6-layer BERT cross-encoder (MiniLM tokenizer), as a teacher export."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rerankforge.models.base import default_base_model
    from rerankforge.models.cross_encoder import CrossEncoder

    tok = AutoTokenizer.from_pretrained(default_base_model())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=1,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("teacher6")
    CrossEncoder(BertForSequenceClassification(cfg), tok, max_length=64).save_pretrained(path)
    return path


def pairs():
    groups = make_groups(n=3, size=4, seed=5)
    return [g.query for g in groups for _ in g.candidates], [c.text for g in groups for c in g.candidates]


def test_student_with_all_layers_scores_like_the_teacher(tmp_path, teacher6):
    student_dir = init_student_from_layers(teacher6, list(range(6)), tmp_path / "s6")
    q, d = pairs()
    expected = load_reranker(teacher6).score_pairs(q, d, bf16=False)
    got = load_reranker(student_dir).score_pairs(q, d, bf16=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_layer_subset_copies_the_chosen_layers(tmp_path, teacher6):
    student_dir = init_student_from_layers(teacher6, [0, 5], tmp_path / "s2", max_length=32)
    teacher, student = load_reranker(teacher6), load_reranker(student_dir)
    assert student.model.config.num_hidden_layers == 2 and student.max_length == 32
    t, s = teacher.model.state_dict(), student.model.state_dict()
    for key in s:
        src = key.replace("encoder.layer.1.", "encoder.layer.5.")
        torch.testing.assert_close(s[key], t[src], rtol=0, atol=0, msg=key)
    assert any("encoder.layer.1." in k for k in s) and not any("encoder.layer.2." in k for k in s)
    assert "classifier.weight" in s and "bert.pooler.dense.weight" in s
    q, d = pairs()
    assert not np.allclose(student.score_pairs(q, d, bf16=False), teacher.score_pairs(q, d, bf16=False))
    with pytest.raises(ConfigError, match="distinct indices"):
        subset_layers(teacher.model, [0, 6])
    with pytest.raises(ConfigError, match="distinct indices"):
        subset_layers(teacher.model, [1, 1])


def test_tiny_distill_end_to_end(tmp_path, teacher6):
    groups = make_groups(n=12, size=5, seed=2)
    coll = make_collection(tmp_path / "coll", groups, split="test")
    for g in groups:
        for c in g.candidates:
            c.teacher = None
    groups_path = tmp_path / "mined.jsonl"
    write_groups(groups_path, groups)
    out = tmp_path / "distill"
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(f"""
teacher: {teacher6}
groups: {groups_path}
output_dir: {out}
progress: false
student: {{init: layers, layers: [0, 5]}}
teacher_scoring: {{batch_size: 8, bf16: false, batch_queries: 5}}
train:
  bf16: false
  loss:
    - {{name: kl, temperature: 2.0}}
    - {{name: margin_mse, weight: 0.1}}
    - {{name: listwise_ce, weight: 0.5}}
  data: {{group_size: 4}}
  optim: {{epochs: 1, batch_size: 4, lr: 1.0e-3}}
eval: {{collection: {coll}, split: test, depth: 5, batch_size: 8, chunk_queries: 5, bf16: false}}
""")
    assert main(["distill", "--config", str(cfg), "student.max_length=48"]) == 0

    report = json.loads((out / "distill_report.json").read_text())
    for name in ("teacher", "student"):
        assert {"nDCG@10", "RR@10", "pairs_per_s"} <= set(report[name])
        assert 0.0 <= report[name]["nDCG@10"] <= 1.0 and report[name]["pairs_per_s"] > 0
        assert report[name]["pairs"] == 60  # same 12 x 5 pairs for both
    assert report["teacher"]["layers"] == 6 and report["student"]["layers"] == 2
    assert report["student"]["max_length"] == 48
    assert report["speedup"] == pytest.approx(report["student"]["pairs_per_s"] / report["teacher"]["pairs_per_s"])
    assert report["train"]["global_step"] == 3
    assert report["speedup_median_chunk"] > 0 and report["student"]["pairs_per_s_median_chunk"] > 0
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "model" / "README.md")  # the student's card carries the measured comparison
    by_metric = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert by_metric["nDCG@10"] == pytest.approx(report["student"]["nDCG@10"], abs=1e-4)
    assert "## Distillation" in card.text and "rerankforge distill" in card.text

    # eval_only re-measures the comparison without touching the trained student
    weights = (out / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["distill", "--config", str(cfg), "student.max_length=48", "eval_only=true"]) == 0
    again = json.loads((out / "distill_report.json").read_text())
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == weights
    assert again["student"]["nDCG@10"] == pytest.approx(report["student"]["nDCG@10"], abs=1e-6)
    assert again["teacher_labels"] == report["teacher_labels"] and "train_student" in again["timings_s"]

    # the teacher label job ran once, over every pair, with the teacher's own scores
    labelled = read_groups(out / "groups.teacher.jsonl")
    teacher = load_reranker(teacher6)
    expected = teacher.score_pairs([g.query for g in labelled for _ in g.candidates],
                                   [c.text for g in labelled for c in g.candidates], bf16=False)
    np.testing.assert_allclose([c.teacher for g in labelled for c in g.candidates], expected, atol=1e-5)
    assert report["teacher_labels"]["pairs"] == 60
    assert (out / "model" / "rerankforge.json").exists() and (out / "eval" / "student.trec").exists()

    # groups that already carry teacher scores are not rescored
    from rerankforge.pipelines.distill import TeacherScoring, teacher_scores

    path, info = teacher_scores(out / "groups.teacher.jsonl", teacher6, tmp_path / "unused.jsonl", TeacherScoring())
    assert path == out / "groups.teacher.jsonl" and info["skipped"] and not (tmp_path / "unused.jsonl").exists()
    # what the label job that scored them measured is carried into the report
    assert info["label_job"]["pairs"] == 60 and info["teacher"]["model"] == str(teacher6)
    # and a rerun of distill reuses the finished label job instead of rescoring
    scoring = TeacherScoring(batch_size=8, bf16=False, batch_queries=5)
    path, info = teacher_scores(groups_path, teacher6, out / "groups.teacher.jsonl", scoring, progress=False)
    assert info["computed"] == 0 and info["resumed"] == 12


def test_distill_refuses_a_config_without_teacher_loss(tmp_path, teacher6, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"teacher: {teacher6}\ngroups: x.jsonl\neval: {{collection: {tmp_path}}}\n"
                   f"train: {{loss: [{{name: listwise_ce}}]}}\n")
    assert main(["distill", "--config", str(cfg)]) == 2
    assert "no loss learns from the teacher" in capsys.readouterr().err


def test_distill_mines_text_free_pseudo_query_groups_and_trains_to_a_budget(tmp_path, teacher6):
    from test_pseudo_queries import write_collection

    coll = write_collection(tmp_path / "c")
    out = tmp_path / "distill"
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(f"""
teacher: {teacher6}
mine: {{collection: {coll}, split: train, depth: 5, policy: {{negatives: 2, rank_max: 5}}, text: false,
        pseudo: {{titles: 2, sentences: 2, sentence_min_words: 3}}}}
output_dir: {out}
progress: false
teacher_scoring: {{batch_size: 8, bf16: false, batch_queries: 2}}
train:
  bf16: false
  loss: [{{name: kl}}]
  data: {{group_size: 3}}
  optim: {{epochs: 2, batch_size: 2, lr: 1.0e-3, max_minutes: 5}}
eval: {{collection: {coll}, split: train, depth: 5, batch_size: 8, chunk_queries: 1, bf16: false, device: auto}}
""")
    assert main(["distill", "--config", str(cfg), "student.max_length=48"]) == 0
    (mined_path,) = (out / "groups").glob("*.jsonl")
    mined = read_groups(mined_path)
    assert len(mined) == 5 and all(c.text is None for g in mined for c in g.candidates)
    labelled = read_groups(out / "groups.teacher.jsonl")
    assert all(c.teacher is not None for g in labelled for c in g.candidates)
    report = json.loads((out / "distill_report.json").read_text())
    assert report["setup"]["device"] == "cpu" and report["train"]["global_step"] == 6  # 3 steps x 2 epochs
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["max_minutes"] == 5 and summary["stopped_by_budget"] is None
    # the trainer read the texts from the collection (the groups have none)
    assert f"collection: {coll}" in (out / "config.yaml").read_text()


def test_label_budget_script_keeps_the_head_of_the_mined_groups(tmp_path, teacher6):
    import subprocess
    import sys
    from pathlib import Path

    from test_pseudo_queries import write_collection

    root = Path(__file__).resolve().parents[1]
    coll = write_collection(tmp_path / "c")
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"teacher: {teacher6}\noutput_dir: {tmp_path / 'out'}\n"
                   f"mine: {{collection: {coll}, split: train, depth: 5, policy: {{negatives: 2, rank_max: 5}}, "
                   f"pseudo: {{titles: 3}}, text: false}}\n"
                   f"teacher_scoring: {{batch_size: 4, bf16: false}}\n")

    def cut(seconds):
        out = tmp_path / f"cut{seconds}.jsonl"
        proc = subprocess.run([sys.executable, "scripts/label_budget.py", "--config", str(cfg), "--seconds",
                               str(seconds), "--bench-pairs", "6", "--out", str(out)],
                              capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return read_groups(out), json.loads(Path(str(out) + ".budget.json").read_text())

    everything, info = cut(3600)
    assert info["mined_groups"] == 4 and info["kept_groups"] == 4 and info["teacher_pairs_per_s"] > 0
    (mined_path,) = (tmp_path / "out" / "groups").glob("*.jsonl")
    mined = read_groups(mined_path)
    assert [g.query_id for g in everything] == [g.query_id for g in mined]
    nothing, info = cut(0)
    assert nothing == [] and info["kept_pairs"] == 0
