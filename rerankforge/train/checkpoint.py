"""Training checkpoints: ``<output_dir>/checkpoint-<step>/``, valid only when complete.

Writing. ``accelerator.save_state`` (model as safetensors, optimizer and RNG states as torch
files of plain tensors and numbers), then ``scheduler.json`` (the learning-rate schedule's state
as JSON) and ``trainer_state.json`` go into ``.tmp-checkpoint-<step>``; the marker
``checkpoint-complete.json`` (every file's size) is written last, and the directory is renamed
into place. An older checkpoint of the same step is moved aside first and deleted only after the
rename, and checkpoints beyond ``keep`` are deleted only once the new one is in place. The temp
name is deterministic, so the next run of the same job removes what a killed write left.

Reading. A checkpoint counts only with its marker and every listed file at its listed size;
``resume=auto`` takes the newest such one and says which newer ones it passed over. Nothing in a
checkpoint is unpickled: the scheduler is not registered with Accelerate (which would pickle it
into ``custom_checkpoint_0.pkl`` and load that with ``weights_only=False``), every torch file is
loaded with ``weights_only=True``, and a checkpoint that holds a ``custom_checkpoint_*.pkl`` is
refused with a message rather than loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

from rerankforge.errors import ConfigError
from rerankforge.utils.io import write_json

log = logging.getLogger(__name__)

MARKER = "checkpoint-complete.json"
SCHEDULER = "scheduler.json"
STATE = "trainer_state.json"


def _step(p: Path) -> int:
    try:
        return int(p.name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def is_complete(path: Path) -> bool:
    """The marker is there and every file it lists has its recorded size."""
    marker = Path(path) / MARKER
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((Path(path) / name).is_file() and (Path(path) / name).stat().st_size == size
               for name, size in files.items())


def find_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    found = [p for p in Path(root).glob("checkpoint-*") if p.is_dir() and _step(p) >= 0]
    return sorted((p for p in found if is_complete(p)), key=_step)


def newest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are named in a warning."""
    complete = find_checkpoints(root)
    best = complete[-1] if complete else None
    skipped = sorted((p for p in Path(root).glob("checkpoint-*") if p.is_dir() and _step(p) >= 0
                      and not is_complete(p) and (best is None or _step(p) > _step(best))), key=_step)
    if skipped:
        log.warning("%s: skipping incomplete checkpoint(s) %s (no %s or a file of the wrong size); resuming from %s",
                    root, ", ".join(p.name for p in skipped), MARKER, best.name if best else "the start")
    return best


def clean_leftovers(root: Path) -> None:
    """Remove temp and moved-aside checkpoint directories a killed run of this job left behind."""
    for p in list(Path(root).glob(".tmp-checkpoint-*")) + list(Path(root).glob(".old-checkpoint-*")):
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(accelerator: Accelerator, out: Path, state: dict, keep: int, scheduler=None) -> None:
    step = state["global_step"]
    final = out / f"checkpoint-{step}"
    tmp = out / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # a killed write of this very checkpoint
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if scheduler is not None:
            write_json(tmp / SCHEDULER, scheduler_state(scheduler))
        write_json(tmp / STATE, state)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        for name in files:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        write_json(tmp / MARKER, {"step": step, "files": files})  # last: the checkpoint is complete
        _fsync_dir(tmp)
        aside = out / f".old-checkpoint-{step}"
        if final.exists():
            if aside.exists():
                shutil.rmtree(aside)
            final.rename(aside)
        tmp.rename(final)
        _fsync_dir(out)
        shutil.rmtree(aside, ignore_errors=True)
        for old in find_checkpoints(out)[:-keep] if keep > 0 else []:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# ------------------------------------------------------------------------- scheduler state
def scheduler_state(scheduler) -> dict:
    """A ``LambdaLR``'s state as JSON-able values (the multiplier objects' attributes included,
    e.g. a time budget's fitted length)."""
    state = scheduler.state_dict()
    return json.loads(json.dumps(state, default=_refuse))


def _refuse(value):
    raise TypeError(f"scheduler state holds a {type(value).__name__}, which cannot be saved as JSON")


def load_scheduler(scheduler, path: Path, global_step: int) -> None:
    """Restore the schedule from ``scheduler.json``; a checkpoint without one (written before the
    file existed) gets the schedule replayed to ``global_step``: a ``LambdaLR`` is a pure
    function of its step count."""
    file = Path(path) / SCHEDULER
    if file.exists():
        scheduler.load_state_dict(json.loads(file.read_text()))
        return
    log.warning("%s has no %s: replaying the learning-rate schedule to step %d", path, SCHEDULER, global_step)
    for _ in range(global_step):
        scheduler.step()


def check_no_pickle(path: Path) -> None:
    """Refuse a checkpoint that would make Accelerate unpickle something, before it loads anything.

    ``custom_checkpoint_*.pkl`` is loaded by Accelerate with ``weights_only=False`` (arbitrary
    code); rerankforge registers no custom objects, so such a file comes from an old version or
    from someone else. The RNG states (``random_states_*.pkl``) are torch files that Accelerate
    loads with ``weights_only=True`` but inside a bare ``except``: a file that is not plain data
    would silently skip restoring the RNG, so it is checked here and refused by name."""
    path = Path(path)
    custom = sorted(p.name for p in path.glob("custom_checkpoint_*.pkl"))
    if custom:
        raise ConfigError(f"{path}: refusing to resume: {', '.join(custom)} is a pickle, which can run arbitrary code "
                          f"when loaded (rerankforge never writes one; checkpoints of older versions held the "
                          f"scheduler there). If you trust it, delete the file: the schedule is then replayed from "
                          f"the step count")
    import pickle

    from accelerate.utils.other import load

    for p in sorted(path.glob("random_states_*.pkl")):
        try:
            load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"{p}: refusing to resume: not a plain-data torch file ({first[:200]})") from None
