"""Fault-and-fuzz suite (issue 17): every input that used to waste a run silently, give wrong
numbers, run code from a checkpoint or crash with a traceback now gives a clear message naming the
key or file:line, or a correct result. One test (or parametrised case) per case; all fast."""

from __future__ import annotations

import json

import pytest

from rerankforge.config import load_config
from rerankforge.errors import ConfigError, DataFormatError
from rerankforge.mining.config import MineConfig
from rerankforge.rerank.apply import RerankConfig
from rerankforge.retrieve.config import RetrieveConfig
from rerankforge.train.config import TrainConfig


# --------------------------------------------------------------------- load-time validation
@pytest.mark.parametrize("override,message", [
    ("optim.lr=-1e-3", "optim.lr must be > 0, got -0.001"),
    ("optim.lr=0", "optim.lr must be > 0"),
    ("optim.head_lr=-1e-3", "optim.head_lr must be > 0"),
    ("data.group_size=1", "data.group_size must be >= 2"),
    ("data.group_size=0", "data.group_size must be >= 2"),
    ("data.max_positives=0", "data.max_positives must be >= 1"),
    ("data.max_groups=0", "data.max_groups must be >= 1"),
    ("optim.batch_size=0", "optim.batch_size must be >= 1"),
    ("optim.grad_accum=0", "optim.grad_accum must be >= 1"),
    ("optim.epochs=0", "optim.epochs must be >= 1"),
    ("optim.max_steps=0", "optim.max_steps must be >= 1 (or null)"),
    ("optim.max_minutes=0", "optim.max_minutes must be > 0"),
    ("optim.warmup_ratio=1.5", "optim.warmup_ratio must be in [0, 1]"),
    ("optim.schedule=cosine_annealing", "choose from linear, cosine"),
    ("model.max_length=0", "model.max_length must be >= 1"),
    ("eval.depth=0", "eval.depth must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1"),
    ("log_every=0", "log_every must be >= 1"),
    ("keep_checkpoints=-1", "keep_checkpoints must be >= 0"),
])
def test_train_config_rejects(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        load_config(TrainConfig, None, [override])


def test_train_config_from_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: -1.0e-3\n")
    with pytest.raises(ConfigError, match=rf"{path}.*optim.lr must be > 0"):
        load_config(TrainConfig, path)


def test_train_config_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  batch_size: [2\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: YAML syntax error"):
        load_config(TrainConfig, path)


def test_trainer_validates_a_config_built_in_code():
    from rerankforge.train.config import OptimConfig
    from rerankforge.train.trainer import Trainer

    with pytest.raises(ConfigError, match="optim.lr must be > 0"):
        Trainer(args=TrainConfig(optim=OptimConfig(lr=-1e-3)))


def test_explicit_max_steps_is_never_unset(tmp_path, tiny_bert_dir):
    """max_steps=1 trains exactly one step (0 is refused above; None means epochs decide)."""
    from helpers import make_groups
    from rerankforge.train.trainer import Trainer

    cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / 'o'}", f"model.name_or_path={tiny_bert_dir}",
                                          "model.max_length=32", "optim.max_steps=1", "optim.batch_size=2",
                                          "bf16=false", "progress=false"])
    Trainer(train_data=make_groups(n=6, size=4), args=cfg).train()
    assert json.loads((tmp_path / "o" / "train_summary.json").read_text())["global_step"] == 1


@pytest.mark.parametrize("schema,overrides,message", [
    (MineConfig, ["depth=0"], "depth must be >= 1"),
    (MineConfig, ["policy.negatives=0"], "negatives .* must be >= 1"),
    (MineConfig, ["batch_size=0"], "batch_size .* must be >= 1"),
    (RetrieveConfig, ["depth=0", "collection=c", "split=test", "out=o"], "depth must be >= 1"),
    (RerankConfig, ["depth=0", "model=m", "collection=c", "split=test", "run=r", "out=o"], "depth must be >= 1"),
    (RerankConfig, ["batch_size=0", "model=m", "collection=c", "split=test", "run=r", "out=o"],
     "batch_size must be >= 1"),
])
def test_depths_and_sizes_at_least_one(schema, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(schema, None, overrides)


# ------------------------------------------------------------------------------ data checks
def _train_cfg(tmp_path, model_dir, *overrides):
    return load_config(TrainConfig, None, [f"output_dir={tmp_path / 'out'}", f"model.name_or_path={model_dir}",
                                           "model.max_length=32", "optim.max_steps=2", "bf16=false",
                                           "progress=false", *overrides])


def test_empty_groups_file_names_the_file(tmp_path, tiny_bert_dir):
    from rerankforge.train.trainer import Trainer

    empty = tmp_path / "g.jsonl"
    empty.write_text("")
    with pytest.raises(ConfigError, match=rf"no training groups in {empty} \(the file is empty\)"):
        Trainer(args=_train_cfg(tmp_path, tiny_bert_dir, f"data.train_groups={empty}")).train()


def _unlabelled(groups):
    for g in groups:
        for c in g.candidates:
            c.label = 0.0
    return groups


def test_groups_without_positive_are_refused(tmp_path, tiny_bert_dir):
    """All groups without a positive: listwise CE would be 0.0 at every step (rc 0 before)."""
    from helpers import make_groups
    from rerankforge.data.groups import write_groups
    from rerankforge.train.trainer import Trainer

    path = tmp_path / "g.jsonl"
    write_groups(path, _unlabelled(make_groups(n=4, size=4)))
    with pytest.raises(DataFormatError, match=rf"{path}: none of the 4 groups has a positive .*listwise_ce"):
        Trainer(args=_train_cfg(tmp_path, tiny_bert_dir, f"data.train_groups={path}")).train()


def test_groups_without_positive_are_skipped_and_counted(tmp_path, tiny_bert_dir, caplog):
    from helpers import make_groups
    from rerankforge.train.data_checks import check_groups
    from rerankforge.losses import build_loss

    groups = make_groups(n=5, size=4)
    _unlabelled(groups[:2])
    with caplog.at_level("WARNING"):
        kept = check_groups(groups, list(build_loss("ranknet").terms), None, "g.jsonl")
    assert [g.query_id for g in kept] == ["q2", "q3", "q4"]
    assert "skipped 2 of 5 groups without a positive" in caplog.text
    # a loss that learns from all-negative groups (pointwise BCE) keeps them; a teacher loss
    # needs a teacher score instead of a positive
    assert len(check_groups(groups, list(build_loss("bce").terms), None)) == 5
    assert len(check_groups(groups, list(build_loss("kl").terms), None)) == 5
    for c in groups[0].candidates:
        c.teacher = None
    assert len(check_groups(groups, list(build_loss("kl").terms), None)) == 4


def test_textless_candidate_missing_from_collection_fails_before_training(tmp_path, tiny_bert_dir):
    """Used to crash mid-training when its batch came up; now refused up front with file:line."""
    from helpers import make_collection, make_groups
    from rerankforge.data.groups import write_groups
    from rerankforge.train.trainer import Trainer

    groups = make_groups(n=4, size=4)
    coll = make_collection(tmp_path / "coll", groups)
    for g in groups:
        for c in g.candidates:
            c.text = None
    groups[2].candidates[1].doc_id = "ghost"
    path = tmp_path / "g.jsonl"
    write_groups(path, groups)
    trainer = Trainer(args=_train_cfg(tmp_path, tiny_bert_dir, f"data.train_groups={path}",
                                      f"data.collection={coll}"))
    with pytest.raises(DataFormatError, match=rf"{path}:3: group 'q2': candidate 'ghost' has no text and the "
                                              r"collection has no document 'ghost'"):
        trainer.train()
    assert not (tmp_path / "out" / "checkpoint-1").exists() and not (tmp_path / "out" / "model").exists()
    # no collection at all: the same candidate is named up front too
    with pytest.raises(DataFormatError, match=rf"{path}:1: .*has no text and no collection was given"):
        Trainer(args=_train_cfg(tmp_path, tiny_bert_dir, f"data.train_groups={path}")).train()


def test_run_reader_rejects_inf_with_line(tmp_path):
    from rerankforge.data.trec import read_run

    path = tmp_path / "r.trec"
    path.write_text("q1 Q0 d1 1 3.5 x\nq1 Q0 d2 2 inf x\n")
    with pytest.raises(DataFormatError, match=rf"{path}:2: score 'inf' is not a finite number"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 -inf x\n")
    with pytest.raises(DataFormatError, match=rf"{path}:1: score '-inf'"):
        read_run(path)


@pytest.mark.parametrize("grade", ["inf", "nan", "1e999", "two"])
def test_qrels_reject_non_finite_grades_with_line(tmp_path, grade):
    from rerankforge.data.beir import load_qrels

    path = tmp_path / "q.tsv"
    path.write_text(f"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t{grade}\n")
    with pytest.raises(DataFormatError, match=rf"{path}:3: relevance"):
        load_qrels(path)


def test_fractional_grades_are_kept_and_score(tmp_path):
    """0.5-graded qrels used to be truncated to 0: nDCG 0.0000 and 0 mined groups."""
    from rerankforge.data.beir import load_qrels
    from rerankforge.eval import evaluate

    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t0.5\nq1\td2\t1.5\n")
    qrels = load_qrels(path)
    assert qrels == {"q1": {"d1": 0.5, "d2": 1.5}}
    scores = evaluate(qrels, {"q1": [("d1", 2.0), ("d3", 1.0)]}, ("nDCG@10",))
    assert 0.0 < scores["nDCG@10"] < 1.0


def test_fractional_grades_mine_groups(tmp_path):
    from helpers import write_tiny_collection
    from rerankforge.pipelines.steps import mine

    coll, _ = write_tiny_collection(tmp_path / "c")
    q = coll / "qrels" / "train.tsv"
    q.write_text("\n".join(line.rsplit("\t", 1)[0] + "\t0.5" if i else line
                           for i, line in enumerate(q.read_text().splitlines())) + "\n")
    cfg = load_config(MineConfig, None, [f"collection={coll}", "split=train", f"out={tmp_path / 'g.jsonl'}",
                                         "policy.negatives=2", "progress=false"])
    from rerankforge.data.groups import read_groups

    assert mine(cfg).groups_written == 5
    assert {c.label for g in read_groups(tmp_path / "g.jsonl") for c in g.candidates} == {0.0, 0.5}


def _with_unknown_judged_doc(coll):
    for split in ("train", "test"):
        q = coll / "qrels" / f"{split}.tsv"
        lines = q.read_text().splitlines()
        qid = lines[1].split("\t")[0]
        q.write_text("\n".join([*lines, f"{qid}\tnot-in-corpus\t1"]) + "\n")
    return coll


def test_qrels_naming_unknown_documents_retrieve_mine_evaluate(tmp_path, caplog):
    """Retrieve and mine used to crash (AttributeError); evaluate refused the collection. Now: a
    warning with a count, and metrics on the official qrels as they are (the unknown judged
    document counts as never retrieved)."""
    from helpers import write_tiny_collection
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run
    from rerankforge.eval import evaluate
    from rerankforge.pipelines.steps import mine, retrieve

    coll, run_path = write_tiny_collection(tmp_path / "c")
    _with_unknown_judged_doc(coll)
    with caplog.at_level("WARNING"):
        result = retrieve(load_config(RetrieveConfig, None, [f"collection={coll}", "split=test",
                                                             f"out={tmp_path / 'r.trec'}", "progress=false"]))
    assert "1 judgments name documents the corpus does not have" in caplog.text
    assert result.metrics["R@100"] < 1.0
    mined = mine(load_config(MineConfig, None, [f"collection={coll}", "split=train", f"out={tmp_path / 'g.jsonl'}",
                                                "policy.negatives=2", "progress=false"]))
    assert mined.groups_written == 5
    c = Collection(coll)
    qrels = c.qrels("test")
    assert "not-in-corpus" in next(iter(qrels.values()))
    run = read_run(run_path, c.queries, c.corpus)
    with_unknown = evaluate(qrels, run, ("R@100",))["R@100"]
    without = evaluate({q: {d: g for d, g in docs.items() if d != "not-in-corpus"} for q, docs in qrels.items()},
                       run, ("R@100",))["R@100"]
    assert with_unknown < without == 1.0


def test_fractional_grades_equal_scaled_integer_grades():
    """nDCG is scale-invariant: 0.5/1.5 grades give the nDCG of 1/3; rel thresholds stay in the
    qrels' own units (0.5 is below rel=1); scale-dependent measures are refused."""
    from rerankforge.eval import evaluate

    run = {"q1": [("d3", 3.0), ("d1", 2.0), ("d2", 1.0)]}
    frac = evaluate({"q1": {"d1": 0.5, "d2": 1.5}}, run, ("nDCG@10", "R@100", "RR@10"))
    ints = evaluate({"q1": {"d1": 1, "d2": 3}}, run, ("nDCG@10",))
    assert frac["nDCG@10"] == pytest.approx(ints["nDCG@10"])
    assert frac["RR@10"] == pytest.approx(1 / 3)  # only d2 (1.5) is relevant at rel >= 1
    assert frac["R@100"] == 1.0
    with pytest.raises(ConfigError, match="fractional grades"):
        evaluate({"q1": {"d1": 0.5}}, run, ("ERR@10",))


# ------------------------------------------------------------------- checkpoints: no pickle
class _Payload:
    """Unpickling this writes a sentinel file (what a crafted checkpoint would do with os.system)."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory, tiny_bert_dir):
    """A 3-step run that saved checkpoint-1 and checkpoint-2 (save_every=1)."""
    from helpers import make_groups
    from rerankforge.train.trainer import Trainer

    root = tmp_path_factory.mktemp("ckpt")
    groups = make_groups(n=6, size=4)
    cfg = _train_cfg(root, tiny_bert_dir, "optim.max_steps=3", "optim.batch_size=2", "save_every=1",
                     "keep_checkpoints=5")
    Trainer(train_data=groups, args=cfg).train()
    return root / "out", groups


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _resume(tmp_path, tiny_bert_dir, groups, out, resume):
    from accelerate.state import AcceleratorState, GradientState, PartialState

    from rerankforge.train.trainer import Trainer

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    cfg = _train_cfg(tmp_path, tiny_bert_dir, f"output_dir={out}", "optim.max_steps=3", "optim.batch_size=2",
                     "save_every=1", "keep_checkpoints=5", f"resume={resume}")
    return Trainer(train_data=groups, args=cfg).train()


def _refresh_marker(ckpt):
    from rerankforge.train.checkpoint import MARKER

    marker = json.loads((ckpt / MARKER).read_text())
    marker["files"] = {name: (ckpt / name).stat().st_size for name in marker["files"]}
    (ckpt / MARKER).write_text(json.dumps(marker))


def test_checkpoint_holds_no_pickle_of_objects(checkpointed):
    out, _ = checkpointed
    ckpt = out / "checkpoint-2"
    names = {p.name for p in ckpt.iterdir()}
    assert {"scheduler.json", "trainer_state.json", "checkpoint-complete.json", "model.safetensors"} <= names
    assert not any(n.startswith("custom_checkpoint") for n in names)
    assert json.loads((ckpt / "scheduler.json").read_text())["last_epoch"] == 2


@pytest.mark.parametrize("target", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_crafted_checkpoint_payload_never_runs(tmp_path, tiny_bert_dir, checkpointed, target):
    """accelerate loaded custom_checkpoint_0.pkl (the registered scheduler) with weights_only=False:
    a crafted checkpoint ran its payload on resume=PATH. Now the file is refused by name, and the
    other torch files only ever load as plain data."""
    import torch

    src, groups = checkpointed
    out = _copy_run(src, tmp_path / "run")
    ckpt = out / "checkpoint-2"
    sentinel = tmp_path / "PWNED"
    torch.save({"step": 0, "random_state": _Payload(sentinel)}, ckpt / target)
    _refresh_marker(ckpt)  # an attacker would write a matching marker
    with pytest.raises(ConfigError, match=rf"{ckpt}.*refusing to resume"):
        _resume(tmp_path, tiny_bert_dir, groups, out, ckpt)
    assert not sentinel.exists()


# --------------------------------------------------------------- checkpoints: completeness
def test_resume_auto_falls_back_to_newest_complete_checkpoint(tmp_path, tiny_bert_dir, checkpointed, caplog):
    from rerankforge.train.checkpoint import MARKER, find_checkpoints, newest_checkpoint

    src, groups = checkpointed
    out = _copy_run(src, tmp_path / "run")
    (out / "checkpoint-2" / MARKER).unlink()  # killed before the marker: incomplete
    with caplog.at_level("WARNING"):
        assert newest_checkpoint(out) == out / "checkpoint-1"
    assert "skipping incomplete checkpoint(s) checkpoint-2" in caplog.text
    assert find_checkpoints(out) == [out / "checkpoint-1"]
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        _resume(tmp_path, tiny_bert_dir, groups, out, out / "checkpoint-2")
    (out / ".tmp-checkpoint-3").mkdir()  # what a run killed inside save_state leaves
    (out / ".tmp-checkpoint-3" / "optimizer.bin").write_bytes(b"half")
    _resume(tmp_path, tiny_bert_dir, groups, out, "auto")
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 3
    assert not (out / ".tmp-checkpoint-3").exists()
    assert find_checkpoints(out)[-1] == out / "checkpoint-2"  # rewritten, complete


def test_truncated_checkpoint_file_is_incomplete(tmp_path, checkpointed):
    from rerankforge.train.checkpoint import find_checkpoints

    out = _copy_run(checkpointed[0], tmp_path / "run")
    with open(out / "checkpoint-2" / "model.safetensors", "r+b") as fh:
        fh.truncate(100)
    assert find_checkpoints(out) == [out / "checkpoint-1"]


def test_old_checkpoint_survives_a_failed_save(tmp_path, tiny_bert_dir, monkeypatch):
    """keep_checkpoints=1: the previous checkpoint is deleted only after the new one is in place."""
    from pathlib import Path

    from helpers import make_groups
    from rerankforge.train.checkpoint import find_checkpoints
    from rerankforge.train.trainer import Trainer

    rename = Path.rename

    def failing(self, target):
        if self.name == ".tmp-checkpoint-2":
            raise OSError("disk full")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    cfg = _train_cfg(tmp_path, tiny_bert_dir, "optim.max_steps=3", "optim.batch_size=2", "save_every=1",
                     "keep_checkpoints=1")
    with pytest.raises(OSError, match="disk full"):
        Trainer(train_data=make_groups(n=6, size=4), args=cfg).train()
    assert find_checkpoints(tmp_path / "out") == [tmp_path / "out" / "checkpoint-1"]


def test_atomic_write_leftover_is_removed_by_the_next_write(tmp_path):
    from rerankforge.utils.io import atomic_write, temp_path

    target = tmp_path / "labels.jsonl"
    temp_path(target).write_text("half of a killed write")
    with atomic_write(target) as fh:
        fh.write("ok\n")
    assert target.read_text() == "ok\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.jsonl"]


def test_atomic_write_temp_name_is_deterministic_under_sigkill(tmp_path):
    """SIGKILL inside the write (no finally runs): the temp file has the documented name."""
    import os
    import signal
    import subprocess
    import sys

    target = tmp_path / "out.jsonl"
    code = ("import os, signal, sys\nfrom rerankforge.utils.io import atomic_write\n"
            f"with atomic_write({str(target)!r}) as fh:\n    fh.write('x' * 1000); fh.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd())
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir()] == [".out.jsonl.tmp-rerankforge"]
    from rerankforge.utils.io import atomic_write

    with atomic_write(target) as fh:
        fh.write("done")
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# ------------------------------------------------------------------ LLM API: dead endpoints
class FaultServer:
    """A chat-completions endpoint on 127.0.0.1 whose behaviour is switched while a job runs:
    ``ok`` answers grade 2, ``hang`` answers after ``hang_s``, ``reset`` closes the connection
    without a reply, ``401``/``403``/``500`` reply with that status."""

    def __init__(self, hang_s=1.0, port=0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.mode, self.hang_s, self.requests, self.prompts = "ok", hang_s, 0, []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                import time

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests += 1
                    owner.prompts.append(body["messages"][0]["content"])
                mode = owner.mode
                if mode == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if mode == "hang":
                    time.sleep(owner.hang_s)
                if mode in ("401", "403", "500"):
                    self.send_response(int(mode))
                    self.end_headers()
                    self.wfile.write(b'{"error": "no"}')
                    return
                data = json.dumps({"choices": [{"message": {"content": "##final score: 2"}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.closed = False

    def __enter__(self):
        self.thread.start()
        return self

    def close(self):
        if not self.closed:
            self.closed = True
            self.httpd.shutdown()
            self.httpd.server_close()

    def __exit__(self, *exc):
        self.close()


def _api_groups(path, n_queries=6, per_query=4):
    from rerankforge.data.groups import Candidate, Group, write_groups

    write_groups(path, [Group(f"q{i}", f"query {i}", [Candidate(f"d{i}-{j}", f"passage {i} {j}")
                                                     for j in range(per_query)]) for i in range(n_queries)])
    return path


def _api_labeler(url, cache, prompt=None, timeout=0.3, failures=3, concurrency=2):
    from rerankforge.labels.api import UMBRELA_PROMPT, APILabeler, ChatClient, JudgmentCache

    client = ChatClient(url, "judge", api_key="sk-test", timeout=timeout, max_retries=3, backoff_base=0.01,
                        backoff_max=0.02, max_consecutive_failures=failures)
    return APILabeler(client, JudgmentCache(cache), prompt or UMBRELA_PROMPT, concurrency=concurrency)


@pytest.mark.parametrize("fault", ["reset", "hang", "401", "403", "refused"])
def test_api_circuit_breaker_stops_and_keeps_progress(tmp_path, fault):
    """Before: a dead/hung/401 endpoint was tried for every pair (timeout x attempts each). Now the
    job stops after 3 consecutive connection failures/timeouts or the first 401/403, with a
    message; the batch labelled before the fault is kept and a rerun resumes without re-sending."""
    import time

    from rerankforge.data.groups import read_groups
    from rerankforge.labels import partial_path, run_label_job
    from rerankforge.labels.api import EndpointDown

    groups, out = _api_groups(tmp_path / "g.jsonl"), tmp_path / "o.jsonl"
    with FaultServer() as server:
        def after_batch(b, n):
            if fault == "refused":
                server.close()  # nothing listens on the port any more
            else:
                server.mode = fault

        t0 = time.perf_counter()
        with pytest.raises(EndpointDown) as err:
            run_label_job(_api_labeler(server.url, tmp_path / "c.sqlite"), groups, out, batch_queries=2,
                          progress=False, after_batch=after_batch)
        elapsed = time.perf_counter() - t0
        after_fault = server.requests - 8
        msg = str(err.value)
        assert "rerun the same command to resume" in msg
        if fault in ("401", "403"):
            assert f"HTTP {fault}" in msg and "API key" in msg
            assert after_fault <= 2  # one per thread in flight; never retried
        else:
            assert "3 consecutive connection failures or timeouts" in msg
            assert after_fault <= 3 + 2  # threshold + requests already in flight
        assert elapsed < 8, elapsed  # 16 pairs x 4 attempts x 0.3 s would be ~19 s
        assert not out.exists()
        assert sum(1 for _ in open(partial_path(out))) == 1 + 2  # header + the 2 queries of batch 0
    # the endpoint is back (same URL: the job's settings and so its resume fingerprint are unchanged)
    with FaultServer(port=server.port) as healthy:
        summary = run_label_job(_api_labeler(healthy.url, tmp_path / "c.sqlite"), groups, out, batch_queries=2,
                                progress=False)
        assert summary.resumed == 2 and summary.failed_pairs == 0
        assert healthy.requests == 16  # batch 0's 8 pairs are not sent again
    assert all(c.label == 2.0 for g in read_groups(out) for c in g.candidates)


def test_api_500s_are_not_a_dead_endpoint(tmp_path):
    """HTTP replies (even 500s) reset the breaker: a failing pair is reported, the job goes on."""
    from rerankforge.labels import run_label_job

    groups, out = _api_groups(tmp_path / "g.jsonl", n_queries=2, per_query=3), tmp_path / "o.jsonl"
    with FaultServer() as server:
        server.mode = "500"
        summary = run_label_job(_api_labeler(server.url, tmp_path / "c.sqlite", failures=2), groups, out,
                                progress=False)
    assert summary.failed_pairs == 6 and server.requests == 6 * 4


def test_api_prompt_with_literal_braces(tmp_path):
    """A prompt showing JSON ({"score": 2}) crashed str.format with KeyError."""
    from rerankforge.data.groups import read_groups
    from rerankforge.labels import run_label_job
    from rerankforge.labels.api import render_prompt

    prompt = ('Answer as {"score": N} and then ##final score: N.\nQuery: {query}\nPassage: {passage}\n'
              'Example: {"score": 2} {unknown}')
    groups, out = _api_groups(tmp_path / "g.jsonl", n_queries=1, per_query=2), tmp_path / "o.jsonl"
    with FaultServer() as server:
        run_label_job(_api_labeler(server.url, tmp_path / "c.sqlite", prompt=prompt), groups, out, progress=False)
    assert [c.label for g in read_groups(out) for c in g.candidates] == [2.0, 2.0]
    assert server.prompts[0].startswith('Answer as {"score": N}') and "Query: query 0\nPassage: passage 0" in \
        server.prompts[0] and server.prompts[0].endswith('{"score": 2} {unknown}')
    # one pass: a query that contains a placeholder is not substituted again
    assert render_prompt("{query}|{passage}", query="{passage}", passage="p") == "{passage}|p"


def test_api_config_validation():
    from rerankforge.labels.config import APIConfig

    base = ["groups=g.jsonl", "out=o.jsonl"]
    for override, msg in (("max_consecutive_failures=0", "max_consecutive_failures must be >= 1"),
                          ("concurrency=0", "concurrency must be >= 1"), ("timeout=0", "timeout must be > 0")):
        with pytest.raises(ConfigError, match=msg):
            load_config(APIConfig, None, [*base, override])


def test_out_under_a_regular_file_is_a_message(tmp_path):
    from rerankforge.data.trec import write_run

    (tmp_path / "results.trec").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot create directory .*results.trec/sub: .*results.trec is a file"):
        write_run(tmp_path / "results.trec" / "sub" / "run.trec", {"q": [("d", 1.0)]})


def test_missing_model_directory_is_a_message(tmp_path):
    from rerankforge.models import load_reranker

    with pytest.raises(FileNotFoundError, match=r"model directory .*runs/nothing/model does not exist"):
        load_reranker(str(tmp_path / "runs" / "nothing" / "model"))


# ------------------------------------------------------------------------- kill and resume
_KILL_TRAIN = """
import os, signal, sys
sys.path.insert(0, "tests")
from helpers import make_groups
import rerankforge.train.checkpoint as ck
from rerankforge.config import load_config
from rerankforge.train.config import TrainConfig
from rerankforge.train.trainer import Trainer

real = ck.write_json
def write_json(path, obj):
    # SIGKILL inside the write of checkpoint-4: its files are there, its marker is not
    if path.name == ck.MARKER and obj["step"] == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, obj)
ck.write_json = write_json
cfg = load_config(TrainConfig, None, sys.argv[1:])
Trainer(train_data=make_groups(n=12, size=4), args=cfg).train()
"""


def test_sigkill_inside_a_checkpoint_write_then_resume_is_exact(tmp_path, tiny_bert_dir):
    """SIGKILL while checkpoint-4 is written: resume=auto removes the debris, falls back to
    checkpoint-2 and ends with the weights of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    from helpers import make_groups
    from rerankforge.train.trainer import Trainer

    common = [f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", "optim.max_steps=6",
              "optim.batch_size=2", "save_every=2", "keep_checkpoints=1", "bf16=false", "progress=false",
              "optim.lr=1e-3"]
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _KILL_TRAIN, f"output_dir={killed}", *common], cwd=os.getcwd(),
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / ".tmp-checkpoint-4").is_dir() and (killed / "checkpoint-2").is_dir()
    Trainer(train_data=make_groups(n=12, size=4),
            args=load_config(TrainConfig, None, [f"output_dir={killed}", "resume=auto", *common])).train()
    assert not (killed / ".tmp-checkpoint-4").exists()
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    Trainer(train_data=make_groups(n=12, size=4),
            args=load_config(TrainConfig, None, [f"output_dir={tmp_path / 'full'}", *common])).train()
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
