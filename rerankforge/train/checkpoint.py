"""Training checkpoints: ``<output_dir>/checkpoint-<step>/`` written whole or not at all."""

from __future__ import annotations

import shutil
from pathlib import Path

from accelerate import Accelerator

from rerankforge.utils.io import write_json


def find_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first."""
    return sorted((p for p in Path(root).glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()),
                  key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, out: Path, state: dict, keep: int) -> None:
    final = out / f"checkpoint-{state['global_step']}"
    tmp = out / f".tmp-checkpoint-{state['global_step']}"
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(tmp / "trainer_state.json", state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # a checkpoint dir is complete or absent, never half-written
        for old in find_checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
