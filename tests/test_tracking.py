"""Trackers write what they should (read back from their own files), accelerate's precision is
checked, and evaluation during training keeps the best model."""

import json
from pathlib import Path

import pytest

from helpers import write_tiny_groups
from rerankforge.config import load_config
from rerankforge.errors import ConfigError
from rerankforge.train import TrainConfig
from rerankforge.train.tracking import flatten_config, mixed_precision


def cfg_for(tmp_path, model_dir, *overrides):
    groups = write_tiny_groups(tmp_path / "groups.jsonl", n=8, size=5)
    return load_config(TrainConfig, None, [f"output_dir={tmp_path / 'run'}", f"model.name_or_path={model_dir}",
                                           "model.max_length=32", f"data.train_groups={groups}", "data.group_size=4",
                                           "optim.batch_size=2", "optim.lr=1e-3", "optim.epochs=1", "bf16=false",
                                           "progress=false", "log_every=1", *overrides])


def test_flatten_config_gives_only_scalars():
    flat = flatten_config({"optim": {"lr": 1e-3, "max_steps": None}, "loss": [{"name": "kl"}], "tags": [],
                           "model": {"params": {}, "lora": None}, "bf16": True})
    assert flat == {"optim.lr": 1e-3, "optim.max_steps": "null", "loss": '[{"name": "kl"}]', "tags": "[]",
                    "model.params": "{}", "model.lora": "null", "bf16": True}


def test_tensorboard_events_read_back(tmp_path, tiny_bert_dir, tiny_collection):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rerankforge.pipelines.steps import train_recipe

    coll, _ = tiny_collection
    cfg = cfg_for(tmp_path, tiny_bert_dir, "tracking.report_to=[tensorboard]", "tracking.run_name=tb-run",
                  f"eval.collection={coll}", "eval.depth=6", "eval.split=test",
                  f"dev.collection={coll}", "dev.split=train", "dev.every=2", "dev.depth=6")
    train_recipe(cfg)
    run_dir = tmp_path / "run" / "tensorboard" / "tb-run"
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/pairs_per_s", "train/loss/listwise_ce", "dev/nDCG@10",
            "eval/test/nDCG@10", "eval/test/first_stage/nDCG@10"} <= tags, tags
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["history"]
    assert [e.value for e in losses] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    assert [e.step for e in acc.Scalars("dev/nDCG@10")] == [2, 4]
    test_ndcg = json.loads((tmp_path / "run" / "eval.json").read_text())["reranked"]["nDCG@10"]
    assert acc.Scalars("eval/test/nDCG@10")[-1].value == pytest.approx(test_ndcg, rel=1e-6)
    # the hyperparameters (add_hparams writes them into a sub-run): the flattened config
    (hp_dir,) = {p.parent for p in run_dir.glob("*/events.out.tfevents.*")}
    hp = EventAccumulator(str(hp_dir))
    hp.Reload()
    session = hp.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.HParamsPluginData.FromString(session).session_start_info
    assert info.hparams["optim.lr"].number_value == pytest.approx(1e-3)
    assert info.hparams["tracking.report_to"].string_value == '["tensorboard"]'
    assert info.hparams["optim.max_steps"].string_value == "null"


def test_wandb_offline_run_read_back(tmp_path, tiny_bert_dir, tiny_collection, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from rerankforge.pipelines.steps import train_recipe

    coll, _ = tiny_collection
    cfg = cfg_for(tmp_path, tiny_bert_dir, "tracking.report_to=[wandb]", "tracking.project=rf-test",
                  "tracking.run_name=wb-run", "tracking.tags=[tiny,ci]", "tracking.entity=rf-team",
                  f"eval.collection={coll}", "eval.depth=6", f"dev.collection={coll}", "dev.split=train",
                  "dev.every=2", "dev.depth=6")
    train_recipe(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    records = read_wandb_records(next(runs[0].glob("*.wandb")))
    run = records["run"][0]
    assert (run.project, run.display_name, list(run.tags), run.entity) == ("rf-test", "wb-run", ["tiny", "ci"],
                                                                           "rf-team")
    config = _items(records["config"][0].update)
    assert config["optim"]["lr"] == pytest.approx(1e-3) and config["tracking"]["tags"] == ["tiny", "ci"]
    rows = [_items(h.item) for h in records["history"]]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["_step"] for r in train_rows] == [1, 2, 3, 4]
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["history"]
    assert [r["train/loss"] for r in train_rows] == pytest.approx([h["loss"] for h in history], rel=1e-9)
    assert [r["_step"] for r in rows if "dev/nDCG@10" in r] == [2, 4]
    summary: dict = {}
    for update in records["summary"]:
        summary.update(_items(update.update))
    test_ndcg = json.loads((tmp_path / "run" / "eval.json").read_text())["reranked"]["nDCG@10"]
    assert summary["eval/test/nDCG@10"] == pytest.approx(test_ndcg)
    assert summary["train/loss"] == pytest.approx(train_rows[-1]["train/loss"])
    assert records["exit"][0].exit_code == 0


def read_wandb_records(path: Path) -> dict[str, list]:
    """The protobuf records of an offline ``run-*.wandb`` file, by record type. wandb >= 0.19 has
    no Python reader any more; the file is a 7-byte header (":W&B", magic, version) and then a
    LevelDB log: 32 KiB blocks of chunks with a 7-byte header (crc32, length, type FULL/FIRST/
    MIDDLE/LAST), each record a serialized ``wandb_internal_pb2.Record``."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    out: dict[str, list] = {}
    for chunk in chunks:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(chunk)
        kind = rec.WhichOneof("record_type")
        out.setdefault(kind, []).append(getattr(rec, kind))
    return out


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_mixed_precision_conflicts_name_both(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert mixed_precision(True) == "bf16" and mixed_precision(False) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert mixed_precision(False) == "no"
    with pytest.raises(ConfigError, match=r"mixed_precision='no'.*bf16: true.*--mixed_precision bf16"):
        mixed_precision(True)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert mixed_precision(True) == "bf16"
    with pytest.raises(ConfigError, match=r"mixed_precision='bf16'.*bf16: false"):
        mixed_precision(False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ConfigError, match=r"mixed_precision='fp16'.*not fp16"):
        mixed_precision(False)


def test_train_refuses_conflicting_precision_before_building_the_model(tmp_path, tiny_bert_dir, monkeypatch):
    from rerankforge.train import train

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    with pytest.raises(ConfigError, match="bf16: true"):
        train(cfg_for(tmp_path, tiny_bert_dir, "bf16=true"))
    assert not (tmp_path / "run" / "model").exists()


def test_dev_evaluation_keeps_the_best(tmp_path, tiny_bert_dir, tiny_collection):
    from rerankforge.models import load_reranker
    from rerankforge.train import train

    coll, _ = tiny_collection
    cfg = cfg_for(tmp_path, tiny_bert_dir, f"dev.collection={coll}", "dev.split=train", "dev.every=1",
                  "dev.depth=6", "dev.export_best=true", "optim.epochs=2")
    model_dir = train(cfg)
    dev = json.loads((tmp_path / "run" / "dev_history.json").read_text())
    values = [h["nDCG@10"] for h in dev["history"]]
    assert [h["step"] for h in dev["history"]] == list(range(1, 9))
    best_step = dev["history"][values.index(max(values))]["step"]  # the first of equal maxima
    best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
    assert best["step"] == dev["best"]["step"] == best_step and best["nDCG@10"] == max(values)
    assert json.loads((model_dir / "best.json").read_text())["step"] == best_step
    load_reranker(tmp_path / "run" / "best")
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["dev"]["best"]["step"] == best_step and summary["dev"]["evaluations"] == 8


def test_dev_config_refuses_test_split():
    with pytest.raises(ConfigError, match="test judgments"):
        load_config(TrainConfig, None, ["dev.every=5", "dev.split=test"])


def test_dev_on_queries_held_out_from_mining(tmp_path, tiny_bert_dir, tiny_collection):
    from rerankforge.pipelines.steps import holdout_ids
    from rerankforge.train.dev_eval import DevEvaluator
    from rerankforge.data.beir import Collection

    coll, _ = tiny_collection
    cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / 'run'}", "dev.every=1", "dev.holdout=true",
                                          f"data.mine={{collection: {coll}, split: train, holdout_queries: 2}}"])
    dev = DevEvaluator.from_config(cfg)
    dev.prepare()
    held = holdout_ids(Collection(coll).qrels("train"), 2, cfg.data.mine.policy.seed)
    assert set(dev._run) == held and dev.split == "train"


def test_dev_at_start_exports_the_start_when_training_only_loses(tmp_path, tiny_bert_dir, tiny_collection,
                                                               monkeypatch):
    """dev.at_start evaluates the untrained model as step 0; when no later step beats it on dev,
    export_best exports the starting weights, not the trained ones."""
    import torch

    import rerankforge.pipelines.steps as steps
    from rerankforge.models import load_reranker
    from rerankforge.models.cross_encoder import CrossEncoder
    from rerankforge.train import Trainer

    real, calls = steps.evaluate_reranker, []

    def declining(*args, **kwargs):  # the real evaluation, its dev nDCG@10 made to fall with every call
        report = real(*args, **kwargs)
        calls.append(report["reranked"]["nDCG@10"])
        report["reranked"]["nDCG@10"] = 1.0 / len(calls)
        return report

    monkeypatch.setattr(steps, "evaluate_reranker", declining)
    coll, _ = tiny_collection
    cfg = cfg_for(tmp_path, tiny_bert_dir, f"dev.collection={coll}", "dev.split=train", "dev.every=2",
                  "dev.depth=6", "dev.export_best=true", "dev.at_start=true")
    model = CrossEncoder.from_base(str(tiny_bert_dir), max_length=32)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model=model, args=cfg)
    model_dir = trainer.train()
    dev = json.loads((tmp_path / "run" / "dev_history.json").read_text())
    assert [h["step"] for h in dev["history"]] == [0, 2, 4] and dev["best"]["step"] == 0
    assert json.loads((model_dir / "best.json").read_text())["step"] == 0
    exported = load_reranker(model_dir).state_dict()
    trained = trainer.model.state_dict()
    assert any(not torch.equal(start[k], trained[k].cpu()) for k in start)  # training did move the weights
    for k, v in start.items():
        assert torch.allclose(exported[k].float().cpu(), v.float(), atol=1e-6), k


def test_dev_without_at_start_has_no_step_zero(tmp_path, tiny_bert_dir, tiny_collection):
    from rerankforge.train import train

    coll, _ = tiny_collection
    train(cfg_for(tmp_path, tiny_bert_dir, f"dev.collection={coll}", "dev.split=train", "dev.every=2",
                  "dev.depth=6"))
    dev = json.loads((tmp_path / "run" / "dev_history.json").read_text())
    assert [h["step"] for h in dev["history"]] == [2, 4]


def test_eval_fusion_chooses_alpha_on_dev_queries_only(tmp_path, tiny_bert_dir, tiny_collection, monkeypatch):
    """eval.fusion: α is the argmax of the dev curve, computed from dev queries alone; the fused
    test run is exactly fuse_with_first_stage at that α and its metrics are those of fused.trec."""
    import rerankforge.eval.metrics as metrics_mod
    import rerankforge.pipelines.steps as steps
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run
    from rerankforge.rerank.fusion import fuse_with_first_stage

    coll, _ = tiny_collection
    collection = Collection(coll)
    train_q, test_q = set(collection.qrels("train")), set(collection.qrels("test"))
    assert train_q and test_q and not train_q & test_q
    seen: list[tuple[set, set]] = []
    real = metrics_mod.evaluate

    def watching(qrels, run, measures):
        seen.append((set(qrels), set(run)))
        return real(qrels, run, measures)

    monkeypatch.setattr(steps, "evaluate", watching)
    cfg = cfg_for(tmp_path, tiny_bert_dir, f"dev.collection={coll}", "dev.split=train", "dev.depth=6",
                  f"eval.collection={coll}", "eval.depth=6", "eval.fusion=true", "eval.measures=[nDCG@10]")
    report = steps.train_recipe(cfg)["eval"]
    fusion = report["fusion"]
    curve = {float(a): v for a, v in fusion["curve"].items()}
    assert len(curve) == 21 and fusion["alpha"] == max(curve, key=lambda a: (curve[a], -a))
    assert fusion["chosen_on"] == {"split": "train", "holdout": False, "queries": len(train_q), "depth": 6}
    assert fusion["dev_pure"] == curve[0.0] and fusion["dev_fused"] == curve[fusion["alpha"]]
    # test judgments are read three times (first stage, reranked, fused) and never for the curve
    assert sum(bool(judged & test_q) for judged, _ in seen) == 3
    dev_calls = [run for judged, run in seen if judged <= train_q]
    assert len(dev_calls) == 2 + 21 and all(run == train_q for run in dev_calls)
    out = tmp_path / "run"
    first = read_run(out / "first_stage.trec")
    reranked = read_run(out / "reranked.trec")
    fused = fuse_with_first_stage(first, reranked, fusion["alpha"], "zscore")
    written = read_run(out / "fused.trec")
    assert {q: [d for d, _ in v] for q, v in written.items()} == {q: [d for d, _ in v] for q, v in fused.items()}
    assert report["fused"] == real(collection.qrels("test"), written, ["nDCG@10"])
    # the p-values are of the written runs against the first stage, on the evaluated queries
    from rerankforge.eval.metrics import per_query
    from rerankforge.eval.significance import compare

    qrels = collection.qrels("test")
    sig = report["significance"]
    assert sig["metric"] == "nDCG@10"
    assert sig["fused_vs_first_stage"] == compare(per_query(qrels, first), per_query(qrels, written))
    assert sig["reranked_vs_first_stage"] == compare(per_query(qrels, first), per_query(qrels, reranked))
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk["fusion"]["alpha"] == fusion["alpha"] and "fused" in on_disk
    card = (out / "model" / "README.md").read_text()
    assert "| fused |" in card and f"α = {fusion['alpha']} × zscore" in card and "`train` queries" in card


def test_eval_fusion_needs_dev_queries():
    with pytest.raises(ConfigError, match="eval.collection"):
        load_config(TrainConfig, None, ["eval.fusion=true"])
    with pytest.raises(ConfigError, match="holdout_queries"):
        load_config(TrainConfig, None, ["eval.collection=x", "eval.fusion=true", "dev.holdout=true"])
    with pytest.raises(ConfigError, match="alpha on dev queries"):
        load_config(TrainConfig, None, ["eval.collection=x", "eval.fusion=true"])
    with pytest.raises(ConfigError, match="fusion_norm"):
        load_config(TrainConfig, None, ["eval.fusion_norm=rank"])


def test_eval_fusion_reuses_the_trainers_dev_first_stage(tmp_path, tiny_bert_dir, tiny_collection, monkeypatch):
    """With evaluation during training, fusion picks α on the same dev first stage, retrieved once."""
    import rerankforge.pipelines.steps as steps
    from rerankforge.train.dev_eval import DevEvaluator

    coll, _ = tiny_collection
    real, prepared = DevEvaluator.prepare, []

    def counting(self):
        prepared.append(self)
        return real(self)

    monkeypatch.setattr(DevEvaluator, "prepare", counting)
    cfg = cfg_for(tmp_path, tiny_bert_dir, f"dev.collection={coll}", "dev.split=train", "dev.depth=6", "dev.every=2",
                  f"eval.collection={coll}", "eval.depth=6", "eval.fusion=true", "eval.measures=[nDCG@10]")
    report = steps.train_recipe(cfg)["eval"]
    assert len(prepared) == 1 and report["fusion"]["chosen_on"]["queries"] == len(prepared[0]._run)
