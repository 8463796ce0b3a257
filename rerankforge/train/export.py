"""The trained model's export, also when its weights are sharded over processes (FSDP, DeepSpeed ZeRO-3).

Under DDP, ZeRO-1/2 or a single process every process holds the whole model and the main process
saves the unwrapped module. Under FSDP or ZeRO-3 each process holds a shard: the export gathers the
full state dict (``accelerator.get_state_dict``, a collective every process takes part in) and the
main process loads it into a copy of the model taken before ``accelerator.prepare`` sharded it,
then writes that copy with the model's own ``save_pretrained`` (so an FSDP-trained cross-encoder
or ColBERT directory is the same as a single-GPU one).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from rerankforge.errors import ConfigError
from rerankforge.utils.io import atomic_save_pretrained


def is_sharded(accelerator) -> bool:
    """True when no single process holds all the weights (FSDP, or DeepSpeed ZeRO stage 3)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return True
    if kind == DistributedType.DEEPSPEED:
        plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        return getattr(plugin, "zero_stage", 0) == 3
    return False


class ModelExport:
    """Create before ``accelerator.prepare(model, ...)``; ``save(prepared_model, path)`` after training."""

    def __init__(self, accelerator, model, cfg) -> None:
        self.accelerator = accelerator
        self.sharded = is_sharded(accelerator)
        if self.sharded and cfg.dev.every:
            raise ConfigError(f"dev.every: evaluation during training runs the whole model on the main process, "
                              f"which {accelerator.distributed_type} shards over processes; evaluate after training "
                              f"(eval:) instead")
        # The weights' layout before sharding; the gathered state dict is loaded into it at export.
        self.spare = copy.deepcopy(model) if self.sharded and accelerator.is_main_process else None

    def save(self, model, path: Path, best: Path | None = None) -> Path:
        acc = self.accelerator
        path = Path(path)
        if best is not None and (best / "best.json").exists():
            if acc.is_main_process:  # the best model by the dev metric becomes the export
                tmp = path.parent / f".tmp-{path.name}"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(best, tmp)
                shutil.rmtree(path, ignore_errors=True)
                tmp.rename(path)
            return path
        if self.sharded:
            state = acc.get_state_dict(model)  # collective: every process must call it
            if acc.is_main_process:
                missing, unexpected = self.spare.load_state_dict(state, strict=False)
                if missing or unexpected:
                    raise RuntimeError(f"gathered state dict does not fit the model: missing {missing[:5]}, "
                                       f"unexpected {unexpected[:5]}")
                atomic_save_pretrained(self.spare, path)
        elif acc.is_main_process:
            atomic_save_pretrained(acc.unwrap_model(model), path)
        return path
