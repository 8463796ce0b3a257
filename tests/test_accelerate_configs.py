"""The shipped accelerate configs parse and agree with the training config's precision; the export
gathers sharded (FSDP) weights into the same model directory a single process writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_the_three_configs_are_shipped():
    assert {p.stem for p in CONFIGS} >= {"multi_gpu", "deepspeed_zero2", "fsdp"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_launch_env_agrees_with_bf16(path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    from rerankforge.errors import ConfigError
    from rerankforge.train.tracking import mixed_precision

    cfg = load_config_from_file(str(path))
    assert cfg.mixed_precision == "bf16" and cfg.num_machines == 1
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    if cfg.distributed_type.value != "DEEPSPEED":  # its env needs deepspeed installed
        env = prepare_multi_gpu_env(args)
        if cfg.distributed_type.value == "FSDP":  # the keys reached accelerate's FSDP plugin settings
            assert (env["FSDP_VERSION"], env["FSDP_AUTO_WRAP_POLICY"], env["FSDP_TRANSFORMER_CLS_TO_WRAP"]) == (
                "2", "TRANSFORMER_BASED_WRAP", "BertLayer")
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env["ACCELERATE_MIXED_PRECISION"])
    else:
        assert cfg.deepspeed_config["zero_stage"] == 2
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", cfg.mixed_precision)
    assert mixed_precision(True) == "bf16"  # the default training config runs under it
    with pytest.raises(ConfigError, match="bf16: false"):
        mixed_precision(False)


FSDP2_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
from accelerate.utils import DistributedType

def worker(rank, world, model_dir, out, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import fully_shard
    from rerankforge.models.cross_encoder import CrossEncoder
    from rerankforge.train import TrainConfig
    from rerankforge.train.export import ModelExport

    class Accelerator:  # what ModelExport uses of accelerate's, with FSDP2's gather (as accelerate does it)
        distributed_type = DistributedType.FSDP
        is_main_process = rank == 0
        def get_state_dict(self, model):
            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        def unwrap_model(self, model):
            return model

    torch.manual_seed(0)
    model = CrossEncoder.from_base(model_dir, max_length=32)
    with torch.no_grad():  # "trained" weights, the same on both ranks
        for i, p in enumerate(model.parameters()):
            p.add_(0.01 * (i + 1))
    if rank == 0:
        model.save_pretrained(out + "/reference")
    export = ModelExport(Accelerator(), model, TrainConfig(output_dir=out))  # before sharding, as in the trainer
    for layer in model.model.bert.encoder.layer:
        fully_shard(layer)
    fully_shard(model)
    assert type(next(model.parameters())).__name__ == "DTensor"
    export.save(model, out + "/model")
    dist.barrier()
    dist.destroy_process_group()

if __name__ == "__main__":
    torch.multiprocessing.spawn(worker, args=(2, *sys.argv[1:4]), nprocs=2)
"""


def test_export_gathers_fsdp2_shards(tmp_path, tiny_bert_dir):
    """accelerate turns FSDP into plain MULTI_CPU on CPU, so this shards the model with torch's
    FSDP2 (``fully_shard``, two gloo processes) and gathers it the way accelerate does for FSDP2:
    the export written from the shards equals the unsharded model's."""
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script), str(tiny_bert_dir), str(tmp_path), "29581"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = load_file(str(tmp_path / "model" / "model.safetensors"))
    want = load_file(str(tmp_path / "reference" / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    from rerankforge.models import load_reranker

    load_reranker(tmp_path / "model")


def test_sharded_export_refuses_dev_evaluation(tmp_path):
    from accelerate.utils import DistributedType

    from rerankforge.errors import ConfigError
    from rerankforge.train import TrainConfig
    from rerankforge.train.export import ModelExport

    class FakeAccelerator:
        distributed_type = DistributedType.FSDP
        is_main_process = True

    cfg = TrainConfig(output_dir=str(tmp_path))
    cfg.dev.every = 5
    with pytest.raises(ConfigError, match="dev.every"):
        ModelExport(FakeAccelerator(), torch.nn.Linear(2, 2), cfg)
