"""``rerankforge adapt`` end to end on a tiny collection with a tiny bi-encoder (seconds)."""

import json
import shlex
import shutil

import pytest

from rerankforge.cli import main
from rerankforge.data.beir import Collection
from rerankforge.data.trec import read_run
from rerankforge.eval import evaluate

from helpers import WORDS
from helpers import write_adapt_collection as _write_collection


def _args(coll, out, tiny_bert_dir, flags=(), overrides=()):
    return ["adapt", "--collection", str(coll), "--out", str(out), "--minutes", "1", "--no-progress",
            "--pseudo-queries", "24", "--dev-queries", "8", *flags,
            f"train.model.name_or_path={tiny_bert_dir}", "train.model.max_length=48", "train.optim.max_steps=3",
            "train.optim.batch_size=4", "train.data.group_size=4", "pseudo.span_min_words=3",
            "pseudo.span_max_words=5", f"dense_model={tiny_bert_dir}", "pseudo.min_doc_words=3", "negatives.negatives=4", "depth=20", *overrides]


CHOICES = ("chosen", "fusion", "pseudo_dev", "pseudo_queries")


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("adapt")
    coll = _write_collection(root / "coll")
    out = root / "out"
    assert main(_args(coll, out, tiny_bert_dir)) == 0
    return coll, out, json.loads((out / "adapt_report.json").read_text())


def test_report_schema_model_and_card(adapted):
    coll, out, report = adapted
    for key in ("first_stage", "pure", "output", "bi_encoder_zero_shot"):
        assert set(report[key]) == {"nDCG@10", "RR@10", "R@100", "AP@100"}, key
    assert 0.0 <= report["fusion"]["alpha"] <= 1.0
    assert report["chosen"]["model"] in ("base", "adapted")
    assert report["chosen"]["output"] == ("pure" if report["fusion"]["alpha"] == 0 else "fused")
    assert report["seconds"] > 0 and report["pairs_per_s"] > 0 and 0 < report["p_vs_bm25"] <= 1
    assert report["pseudo_queries"]["train"] > 0 and report["pseudo_queries"]["dev"] > 0
    assert report["train"]["global_step"] == 3
    # every pseudo-query was cut out of its source document in the work corpus
    work = Collection(out / "work")
    for qid, docs in work.qrels("pseudo_dev").items():
        (doc,) = docs
        assert work.queries[qid] not in work.corpus.text(doc)
    assert (out / "model" / "rerankforge.json").exists() and (out / "model" / "README.md").exists()
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["commands"][1] == report["rerank_command"]


def test_rerank_command_reproduces_output(adapted, tmp_path):
    coll, out, report = adapted
    argv = shlex.split(report["rerank_command"])
    assert argv[:2] == ["rerankforge", "rerank"]
    mine = tmp_path / "again.trec"
    argv = [a if not a.startswith("out=") else f"out={mine}" for a in argv[1:]]
    assert main(argv) == 0
    qrels = Collection(coll).qrels("test")
    again = evaluate(qrels, read_run(mine), list(report["output"]))
    assert again == pytest.approx(report["output"], abs=1e-9)


def test_test_judgments_change_no_choice(adapted, tmp_path, tiny_bert_dir):
    coll, out, report = adapted
    other, out2 = tmp_path / "coll", tmp_path / "out"
    shutil.copytree(coll, other)
    # different test judgments: every query now judges another document relevant
    lines = (other / "qrels" / "test.tsv").read_text().splitlines()
    moved = [lines[0]] + [f"{q}\td{(int(d[1:]) + 7) % 40}\t1" for q, d, _ in (ln.split("\t") for ln in lines[1:])]
    (other / "qrels" / "test.tsv").write_text("\n".join(moved) + "\n")
    assert main(_args(other, out2, tiny_bert_dir)) == 0
    second = json.loads((out2 / "adapt_report.json").read_text())
    assert second["output"] != report["output"]  # the judgments did change what is reported ...
    for key in CHOICES:  # ... and nothing that was chosen
        a, b = dict(report[key]), dict(second[key])
        if key == "pseudo_queries":
            a.pop("examples"), b.pop("examples")
        same = [json.loads(json.dumps(x).replace(str(c), "C").replace(str(o), "O"))
                for x, c, o in ((a, coll, out), (b, other, out2))]
        assert same[0] == same[1], key


def test_teacher_and_user_queries(tmp_path, tiny_bert_dir, tiny_ce_dir):
    coll = _write_collection(tmp_path / "coll")
    own = tmp_path / "own.jsonl"
    own.write_text("".join(json.dumps({"_id": f"u{i}", "text": " ".join(WORDS[i : i + 3])}) + "\n" for i in range(6)))
    out = tmp_path / "out"
    assert main(_args(coll, out, tiny_bert_dir, ["--teacher", str(tiny_ce_dir), "--queries", str(own)],
                      ["mine_retriever=bm25", "train.optim.max_steps=2"])) == 0
    report = json.loads((out / "adapt_report.json").read_text())
    assert report["teacher"]["pairs"] > 0
    import yaml

    trained = yaml.safe_load((out / "train" / "config.yaml").read_text())
    assert [spec["name"] for spec in trained["loss"]] == ["kl", "listwise_ce"]
    assert report["pseudo_queries"]["user_queries"]["given"] == 6
    labelled = report["pseudo_queries"]["user_queries"]["labelled"]
    train_qrels = Collection(out / "work").qrels("pseudo_train")
    assert sum(q.startswith("user:") for q in train_qrels) == labelled


def test_rerun_resumes_with_the_same_choices(adapted, tiny_bert_dir, capsys):
    coll, out, report = adapted
    assert main(_args(coll, out, tiny_bert_dir)) == 0
    assert "resuming:" in capsys.readouterr().out
    again = json.loads((out / "adapt_report.json").read_text())
    assert again["chosen"] == report["chosen"] and again["output"] == report["output"]
    assert again["seconds_before_resume"] > 0
