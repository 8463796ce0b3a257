"""The training loop: plain Accelerate, one model/loss-agnostic path.

    batch of groups -> model -> scores[B, G] -> loss(scores, targets, mask) -> AdamW step

Resuming is exact: data order depends only on (seed, epoch), candidate sampling on
(seed, epoch, group index), and ``accelerator.save_state`` keeps model, optimizer, schedule
and RNG states; a resumed run skips the batches it already consumed.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler

from rerankforge.data.beir import Collection
from rerankforge.data.dataset import GroupCollator, GroupDataset, SamplingConfig
from rerankforge.data.groups import read_groups
from rerankforge.errors import ConfigError
from rerankforge.losses import build_loss
from rerankforge.train.budget import TimeBudget
from rerankforge.train.build import build_model, build_optimizer, build_scheduler
from rerankforge.train.config import TrainConfig, to_yaml
from rerankforge.train.in_batch import InBatchView, check_in_batch
from rerankforge.utils.io import atomic_save_pretrained, atomic_write, write_json

log = logging.getLogger(__name__)


class EpochShuffle(Sampler[int]):
    """A permutation that depends only on (seed, epoch), identical on every process."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def _checkpoints(root: Path) -> list[Path]:
    return sorted((p for p in root.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()),
                  key=lambda p: int(p.name.split("-")[1]))


def _save_checkpoint(accelerator: Accelerator, out: Path, state: dict, keep: int) -> None:
    final = out / f"checkpoint-{state['global_step']}"
    tmp = out / f".tmp-checkpoint-{state['global_step']}"
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(tmp / "trainer_state.json", state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)  # a checkpoint dir is complete or absent, never half-written
        for old in _checkpoints(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _agree(accelerator: Accelerator, value: float | bool) -> float:
    """The main process's value on every process, so all of them take the same branch."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    return broadcast(torch.tensor([float(value)], device=accelerator.device)).item()


def _fit_to_budget(accelerator: Accelerator, scheduler, progress, total_steps: int, fitted: int) -> int:
    fitted = int(_agree(accelerator, fitted))
    if fitted >= total_steps:
        return total_steps
    for fn in scheduler.lr_lambdas:
        fn.total = fitted
    if progress is not None:
        progress.total = fitted
        progress.refresh()
    return fitted


def _record_rank(accelerator: Accelerator, model, out: Path, seen: list[str]) -> None:
    with torch.no_grad():
        checksum = sum(float(p.double().sum()) for p in accelerator.unwrap_model(model).parameters())
    write_json(out / "ranks" / f"rank-{accelerator.process_index}.json",
               {"process_index": accelerator.process_index, "query_ids": seen, "param_checksum": checksum})


def train(cfg: TrainConfig, accelerator: Accelerator | None = None) -> Path:
    """Train ``cfg`` and export the final model to ``<output_dir>/model``; returns that path."""
    if not cfg.data.train_groups:
        raise ConfigError("data.train_groups is not set: give the groups JSONL written by `rerankforge mine`")
    out = Path(cfg.output_dir)
    accelerator = accelerator or Accelerator(
        mixed_precision="bf16" if cfg.bf16 else "no",
        gradient_accumulation_steps=cfg.optim.grad_accum,
        log_with=list(cfg.report_to) or None,
        project_dir=str(out),
    )
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "config.yaml") as fh:
            fh.write(to_yaml(cfg))
    if cfg.report_to:
        from omegaconf import OmegaConf

        accelerator.init_trackers("rerankforge", config=OmegaConf.to_container(OmegaConf.structured(cfg)))

    model = build_model(cfg.model)
    if cfg.in_batch_negatives:
        check_in_batch(model)
    loss_fn = build_loss(list(cfg.loss))
    groups = read_groups(cfg.data.train_groups)
    if cfg.data.max_groups:
        groups = groups[: cfg.data.max_groups]
    text_of = Collection(cfg.data.collection).corpus.text if cfg.data.collection else None
    dataset = GroupDataset(groups, SamplingConfig(cfg.data.group_size, cfg.data.max_positives, True, cfg.seed), text_of)
    sampler = EpochShuffle(len(dataset), cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=sampler,
                        collate_fn=GroupCollator(model.tokenize), num_workers=cfg.data.num_workers,
                        # A private generator: creating an iterator must not draw from the global RNG,
                        # or dropout masks after a resume would differ from the uninterrupted run.
                        generator=torch.Generator().manual_seed(cfg.seed))

    optimizer = build_optimizer(model, cfg.optim)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / cfg.optim.grad_accum)
    total_steps = cfg.optim.max_steps or steps_per_epoch * cfg.optim.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    # Not prepared: accelerate would step it once per process; we step once per optimizer step.
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    accelerator.register_for_checkpointing(scheduler)

    state = {"epoch": 0, "batches_in_epoch": 0, "global_step": 0, "pairs": 0}
    resume = cfg.resume
    if resume == "auto":
        found = _checkpoints(out)
        resume = str(found[-1]) if found else None
    if resume:
        accelerator.load_state(resume)
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        accelerator.print(f"resumed from {resume} at step {state['global_step']}")
        # A time budget fitted before the interruption keeps its length (the schedule's state has it too).
        total_steps = state.get("total_steps", total_steps)

    accelerator.print(f"training {type(accelerator.unwrap_model(model)).__name__} on {len(dataset)} groups: "
                      f"{total_steps} steps, {accelerator.num_processes} process(es), device {accelerator.device}, "
                      f"mixed precision {accelerator.mixed_precision}")
    progress = None
    if cfg.progress and accelerator.is_local_main_process:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=state["global_step"], desc="train", unit="step", dynamic_ncols=True)

    model.train()
    t_start, pairs_start = time.perf_counter(), state["pairs"]
    budget = TimeBudget(cfg.optim.max_minutes, start=t_start) if cfg.optim.max_minutes else None
    first_step = state["global_step"]
    history = []
    seen: list[str] = []
    done = state["global_step"] >= total_steps
    for epoch in range(state["epoch"], epochs):
        if done:
            break
        dataset.set_epoch(epoch)
        skip = state["batches_in_epoch"] if epoch == state["epoch"] else 0
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        # Accelerate's loaders push their own iteration count into the sampler on __iter__;
        # pin it to the true epoch so a resumed (fresh) loader draws the same order.
        batches.set_epoch(epoch)
        state["epoch"], state["batches_in_epoch"] = epoch, skip
        for batch in batches:
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    if cfg.in_batch_negatives:
                        out_ib = model(batch.features, batch.mask, in_batch=True)
                        scores, targets = out_ib.scores, InBatchView(out_ib, batch)
                    else:
                        scores, targets = model(batch.features, batch.mask), batch
                loss, parts = loss_fn.forward_batch(scores.float(), targets)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state["batches_in_epoch"] += 1
            if cfg.record_ranks:
                seen.extend(batch.query_ids)
            state["pairs"] += batch.num_pairs * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["global_step"] += 1
            step = state["global_step"]
            rate = (state["pairs"] - pairs_start) / max(time.perf_counter() - t_start, 1e-9)
            if step % cfg.log_every == 0 or step == total_steps:
                record = {"step": step, "epoch": epoch, "loss": float(loss.detach()), "lr": scheduler.get_last_lr()[0],
                          "pairs_per_s": rate, **{f"loss/{k}": v for k, v in parts.items()}}
                history.append(record)
                accelerator.log(record, step=step)
            if progress:
                progress.update(1)
                progress.set_postfix(loss=f"{float(loss.detach()):.4f}", pairs_s=f"{rate:.1f}", epoch=epoch)
            if budget is not None:
                now = time.perf_counter()
                fitted = None if "total_steps" in state else budget.observe(step - first_step, now)
                if fitted is not None:
                    total_steps = _fit_to_budget(accelerator, scheduler, progress, total_steps, first_step + fitted)
                    state["total_steps"] = total_steps
                    accelerator.print(f"time budget {cfg.optim.max_minutes} min: {budget.step_seconds:.3f}s/step, "
                                      f"training {total_steps} steps")
                if step % 10 == 0 and step < total_steps and _agree(accelerator, budget.expired(now)):
                    state["stopped_by_budget"] = step
                    done = True
                    break
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                _save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
            if step >= total_steps:
                done = True
                break
        else:
            state["epoch"], state["batches_in_epoch"] = epoch + 1, 0
            if not done and epoch + 1 < epochs:
                _save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
    if progress:
        progress.close()

    train_seconds = time.perf_counter() - t_start
    accelerator.wait_for_everyone()
    if cfg.record_ranks:
        _record_rank(accelerator, model, out, seen)
    model_dir = out / "model"
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        atomic_save_pretrained(unwrapped, model_dir)
        write_json(out / "train_summary.json", {
            "global_step": state["global_step"], "pairs": state["pairs"], "train_seconds": train_seconds,
            "pairs_per_s": (state["pairs"] - pairs_start) / max(train_seconds, 1e-9),
            "processes": accelerator.num_processes, "history": history,
            **({"max_minutes": cfg.optim.max_minutes, "fitted_steps": state.get("total_steps"),
                "stopped_by_budget": state.get("stopped_by_budget")} if budget is not None else {}),
        })
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return model_dir
