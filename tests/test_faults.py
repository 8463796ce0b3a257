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
