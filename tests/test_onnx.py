"""ONNX export (parity with PyTorch fp32, dynamic batch/sequence axes, CLI) and model cards."""

import json

import numpy as np
import pytest
import yaml

from rerankforge.cli import main
from rerankforge.errors import ConfigError
from rerankforge.export.card import card_info_from_output_dir, read_card_info, write_model_card
from rerankforge.export.onnx import ONNX_FILE, OnnxCrossEncoder, export_onnx
from rerankforge.models.base import load_reranker
from helpers import DOCS, QUERIES


def test_onnx_export_matches_pytorch(tmp_path, tiny_ce_dir, tiny_collection):
    root, _ = tiny_collection
    rep = export_onnx(tiny_ce_dir, tmp_path / "onnx", collection=root, parity_pairs=24, speed_pairs=16,
                      batch_size=8, repeats=1)
    assert rep["parity_max_abs_diff"] <= 1e-4
    assert rep["speed"]["torch_fp32"] > 0 and rep["speed"]["onnxruntime_fp32"] > 0
    out = tmp_path / "onnx"
    assert (out / ONNX_FILE).exists() and json.loads((out / "onnx_report.json").read_text())["opset"] == 17

    import onnx

    graph = onnx.load(str(out / ONNX_FILE)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == ["batch", "sequence"]

    # batch sizes and lengths never seen at export time (incl. truncation at max_length)
    ort = OnnxCrossEncoder(out)
    long_doc = " ".join(DOCS * 20)
    q, d = QUERIES + ["x"], DOCS + [long_doc]
    ref = load_reranker(tiny_ce_dir).score_pairs(q, d, bf16=False)
    for bs in (1, 3, 4):
        np.testing.assert_allclose(ort.score_pairs(q, d, batch_size=bs), ref, atol=1e-4)
    # the copied checkpoint still loads in PyTorch and scores the same
    np.testing.assert_allclose(load_reranker(out).score_pairs(q, d, bf16=False), ref, atol=1e-6)
    card = (out / "README.md").read_text()
    assert "## ONNX" in card and "onnxruntime_fp32" in card


def test_export_onnx_cli(tmp_path, tiny_ce_dir, tiny_collection, capsys):
    root, _ = tiny_collection
    rc = main(["export-onnx", "--model", str(tiny_ce_dir), "--out", str(tmp_path / "o"), "--collection", str(root),
               "--parity-pairs", "8", "--speed-pairs", "8", "--batch-size", "4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "max |onnx - torch fp32|" in printed and "pairs/s" in printed
    info = read_card_info(tmp_path / "o")
    assert info["commands"][-1].startswith("rerankforge export-onnx model=")


def test_onnx_refuses_scoring_time_calibration(tmp_path, tiny_ce_dir):
    model = load_reranker(tiny_ce_dir)
    model.set_calibration({"method": "platt", "a": 2.0, "b": 1.0, "folded_into_head": False})
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="not folded"):
        export_onnx(tmp_path / "m", tmp_path / "o", speed_pairs=0)


# --- model cards -------------------------------------------------------------------------------

def fake_training_output(root):
    from rerankforge.train.config import TrainConfig, to_yaml

    cfg = TrainConfig()
    cfg.output_dir = str(root)
    cfg.optim.lr = 2.5e-5
    cfg.loss = [{"name": "listwise_ce", "weight": 1.0}, {"name": "margin_mse", "weight": 0.5}]
    cfg.data.train_groups = "data/scifact_groups.jsonl"
    cfg.eval.collection = "shared/datasets/scifact"
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(to_yaml(cfg))
    (root / "train_summary.json").write_text(json.dumps({
        "global_step": 120, "pairs": 7680, "train_seconds": 321.5, "pairs_per_s": 23.9,
        "history": [{"step": 120, "loss": 0.4321}]}))
    (root / "eval.json").write_text(json.dumps({
        "first_stage": {"nDCG@10": 0.6651, "RR@10": 0.6312}, "reranked": {"nDCG@10": 0.7012, "RR@10": 0.6777},
        "rerank_speed": {"pairs": 30000, "pairs_per_s": 101.2}, "split": "test", "depth": 100}))
    (root / "model").mkdir()
    (root / "model" / "rerankforge.json").write_text(json.dumps({"model_type": "cross_encoder"}))
    return root


def test_model_card_from_training_output(tmp_path):
    out = fake_training_output(tmp_path / "run")
    path = write_model_card(out / "model", out)
    card = path.read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "sentence-transformers" and "reranker" in front["tags"]
    assert "all-MiniLM-L6-v2" in card  # "default" base model resolved
    assert "`listwise_ce`" in card and "`margin_mse`" in card and '"weight": 0.5' in card
    assert "| optim.lr | 0.0000 |" not in card and "2.5e-05" in card
    assert "data/scifact_groups.jsonl" in card
    assert "| reranked | 0.7012 | 0.6777 |" in card and "| first_stage | 0.6651 | 0.6312 |" in card
    assert f"rerankforge train --config {out / 'config.yaml'}" in card
    assert "global_step | 120" in card and "final_loss | 0.4321" in card
    assert "## Calibration" not in card and "## ONNX" not in card  # absent facts are not invented
    info = json.loads((out / "model" / "model_card.json").read_text())
    assert info["training"]["hyperparameters"]["optim.lr"] == 2.5e-05


def test_model_card_without_eval_or_summary(tmp_path):
    out = fake_training_output(tmp_path / "run")
    (out / "eval.json").unlink()
    (out / "train_summary.json").unlink()
    card = write_model_card(out / "model", out).read_text()
    assert "## Evaluation" not in card and "## Training run" not in card and "## Hyperparameters" in card
    (out / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        card_info_from_output_dir(out)


def test_card_survives_calibration_and_onnx(tmp_path, tiny_ce_dir, tiny_collection):
    """Training facts written with the model carry through calibrate and export-onnx."""
    from rerankforge.calibration.export import calibrate_reranker

    out = fake_training_output(tmp_path / "run")
    model_dir = tmp_path / "trained"
    load_reranker(tiny_ce_dir).save_pretrained(model_dir)
    write_model_card(model_dir, out)
    root, run = tiny_collection
    calibrate_reranker(model_dir, root, "train", "test", tmp_path / "cal", "temperature", run=run, depth=6,
                       progress=False, command="rerankforge calibrate ...")
    export_onnx(tmp_path / "cal" / "model", tmp_path / "onnx", collection=root, parity_pairs=8, speed_pairs=0,
                command="rerankforge export-onnx ...")
    card = (tmp_path / "onnx" / "README.md").read_text()
    for section in ("## Training data", "## Losses", "## Evaluation", "## Calibration", "## ONNX", "## Reproduce"):
        assert section in card, section
    assert card.index("rerankforge train --config") < card.index("rerankforge calibrate ...") < card.index(
        "rerankforge export-onnx ...")
    assert "`temperature` scaling" in card


def test_card_info_falls_back_to_the_training_output_dir(tmp_path):
    out = fake_training_output(tmp_path / "run")
    info = read_card_info(out / "model")  # no model_card.json yet: read the run beside it
    assert info["training"]["summary"]["global_step"] == 120 and info["evaluation"]["reranked"]["nDCG@10"] == 0.7012
    assert read_card_info(tmp_path) == {}


def test_dynamo_exporter(tmp_path, tiny_ce_dir, tiny_collection):
    pytest.importorskip("onnxscript")
    root, _ = tiny_collection
    rep = export_onnx(tiny_ce_dir, tmp_path / "dyn", collection=root, parity_pairs=16, speed_pairs=0,
                      batch_size=8, exporter="dynamo")
    assert rep["parity_max_abs_diff"] <= 1e-4 and rep["exporter"] == "torch.onnx.export(dynamo=True)"


def test_unknown_or_unavailable_exporter(tmp_path, tiny_ce_dir):
    with pytest.raises(ConfigError, match="unknown ONNX exporter"):
        export_onnx(tiny_ce_dir, tmp_path / "x", exporter="tf2onnx")
