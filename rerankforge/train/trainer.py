"""The training loop: plain Accelerate, one model- and loss-agnostic path.

    batch of groups -> model -> scores[B, G] -> loss(scores, targets, mask) -> AdamW step

    Trainer(model=CrossEncoder("default"), loss="listwise_ce", train_data=groups,
            args=TrainConfig(output_dir="runs/x")).train()

Resuming is exact: data order depends only on (seed, epoch), candidate sampling on
(seed, epoch, group index), and ``accelerator.save_state`` keeps model, optimizer, schedule
and RNG states; a resumed run skips the batches it already consumed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler

from rerankforge.config import config_from_dict, to_yaml
from rerankforge.data.dataset import GroupCollator, GroupDataset, SamplingConfig
from rerankforge.data.groups import Group, open_groups
from rerankforge.errors import ConfigError
from rerankforge.losses import WeightedSum, build_loss
from rerankforge.models.base import Reranker
from rerankforge.train.budget import TimeBudget
from rerankforge.train.build import build_model, build_optimizer, build_scheduler
from rerankforge.train.checkpoint import find_checkpoints, save_checkpoint
from rerankforge.train.config import TrainConfig
from rerankforge.train.in_batch import InBatchView, check_in_batch
from rerankforge.utils.io import atomic_save_pretrained, atomic_write, write_json


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


class Trainer:
    """Train ``model`` with ``loss`` on ``train_data``; ``train()`` exports ``<output_dir>/model``.

    Every argument but ``args`` is optional and falls back to its section of ``args``:
    ``model`` a :class:`Reranker` (else ``args.model``), ``loss`` a loss object, a registry name,
    a ``{name, weight, ...}`` mapping or a list of them (else ``args.loss``), ``train_data`` a list
    of :class:`Group`, a groups JSONL path, a saved Hugging Face dataset directory or a
    ``datasets.Dataset`` in the group schema (else ``args.data``: ``train_groups`` or ``mine``).
    ``args`` is a :class:`TrainConfig` or a nested dict of its fields."""

    def __init__(self, model: Reranker | None = None, loss: Any = None, train_data: Any = None,
                 args: TrainConfig | Mapping[str, Any] | None = None, accelerator: Accelerator | None = None,
                 text_of=None):
        self.args = args if isinstance(args, TrainConfig) else config_from_dict(TrainConfig, args or {}, "Trainer args")
        self.model = model
        self.loss: WeightedSum = build_loss(self.args.loss if loss is None else loss)
        self.train_data = train_data
        self.accelerator = accelerator
        self.text_of = text_of

    # ----------------------------------------------------------------------------- set-up
    def _accelerator(self) -> Accelerator:
        cfg = self.args
        return self.accelerator or Accelerator(
            mixed_precision="bf16" if cfg.bf16 else "no",
            gradient_accumulation_steps=cfg.optim.grad_accum,
            log_with=list(cfg.report_to) or None,
            project_dir=cfg.output_dir,
        )

    def _groups(self, accelerator: Accelerator) -> Sequence[Group]:
        data, source = self.train_data, self.args.data
        if data is None:
            if source.mine is not None:
                from rerankforge.pipelines.steps import mine_cached

                # The main process mines (or finds the cache); the others then read the same file.
                with accelerator.main_process_first():
                    data = mine_cached(source.mine, source.cache_dir).path
            elif source.train_groups:
                data = source.train_groups
            else:
                raise ConfigError("no training data: give train_data, data.train_groups (the groups JSONL written "
                                  "by `rerankforge mine`) or a data.mine section")
        if source.teacher:
            data = self._teacher_scores(accelerator, data)
        groups = open_groups(data)
        if source.max_groups:
            groups = groups.head(source.max_groups) if hasattr(groups, "head") else groups[: source.max_groups]
        if len(groups) == 0:
            raise ConfigError(f"no training groups in {data if isinstance(data, (str, Path)) else 'train_data'}")
        return groups

    def _teacher_scores(self, accelerator: Accelerator, data) -> Path:
        """``data`` (a groups file) with ``data.teacher``'s score on every candidate, beside it."""
        import hashlib

        from rerankforge.pipelines.steps import ensure_model, label_teacher

        source = self.args.data
        if not isinstance(data, (str, Path)):
            raise ConfigError("data.teacher labels a groups file (data.train_groups or data.mine), not train_data")
        path = Path(data)
        tag = hashlib.sha256(str(Path(source.teacher).resolve()).encode()).hexdigest()[:8]
        out = path.with_name(f"{path.name.removesuffix('.jsonl')}.teacher-{tag}.jsonl")
        with accelerator.main_process_first():
            if accelerator.is_main_process:
                ensure_model(source.teacher, source.teacher_recipe, "data.teacher")
                sc = source.teacher_scoring
                label_teacher(path, source.teacher, out, collection=self._collection(), batch_size=sc.batch_size,
                              bf16=sc.bf16, batch_queries=sc.batch_queries, progress=self.args.progress)
        return out

    def _collection(self) -> str | None:
        return self.args.data.collection or (self.args.data.mine.collection if self.args.data.mine else None)

    def _text_of(self):
        if self.text_of is not None:
            return self.text_of
        collection = self._collection()
        if not collection:
            return None
        from rerankforge.data.beir import Collection

        return Collection(collection).corpus.text

    # ------------------------------------------------------------------------------ train
    def train(self) -> Path:
        """Run the loop and export the final model; returns ``<output_dir>/model``."""
        cfg = self.args
        out = Path(cfg.output_dir)
        accelerator = self._accelerator()
        set_seed(cfg.seed)
        model = self.model if self.model is not None else build_model(cfg.model)
        cfg.model.type = model.model_type or cfg.model.type  # the resolved config records what trained
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            with atomic_write(out / "config.yaml") as fh:
                fh.write(to_yaml(cfg))
        if cfg.report_to:
            from omegaconf import OmegaConf

            accelerator.init_trackers("rerankforge", config=OmegaConf.to_container(OmegaConf.structured(cfg)))
        if cfg.in_batch_negatives:
            check_in_batch(model)
        groups = self._groups(accelerator)
        dataset = GroupDataset(groups, SamplingConfig(cfg.data.group_size, cfg.data.max_positives, True, cfg.seed),
                               self._text_of())
        loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=EpochShuffle(len(dataset), cfg.seed),
                            collate_fn=GroupCollator(model.tokenize), num_workers=cfg.data.num_workers,
                            # A private generator: creating an iterator must not draw from the global RNG,
                            # or dropout masks after a resume would differ from the uninterrupted run.
                            generator=torch.Generator().manual_seed(cfg.seed))
        # Learned-bias losses own parameters: they live beside the model, train in the same optimizer
        # and are checkpointed with it (state restored on resume); they are not exported.
        self.loss.to(accelerator.device)
        optimizer = build_optimizer(model, cfg.optim, self.loss)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if any(True for _ in self.loss.parameters()):
            accelerator.register_for_checkpointing(self.loss)
        steps_per_epoch = math.ceil(len(loader) / cfg.optim.grad_accum)
        total_steps = cfg.optim.max_steps or steps_per_epoch * cfg.optim.epochs
        # Not prepared: accelerate would step it once per process; we step once per optimizer step.
        scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
        accelerator.register_for_checkpointing(scheduler)

        state = {"epoch": 0, "batches_in_epoch": 0, "global_step": 0, "pairs": 0}
        resume = cfg.resume
        if resume == "auto":
            found = find_checkpoints(out)
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
        summary = self._loop(accelerator, model, optimizer, loader, scheduler, dataset, state, total_steps,
                             steps_per_epoch, out)
        model_dir = out / "model"
        if accelerator.is_main_process:
            atomic_save_pretrained(accelerator.unwrap_model(model), model_dir)
            write_json(out / "train_summary.json", summary)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        self.model = accelerator.unwrap_model(model)
        return model_dir

    def _loop(self, accelerator, model, optimizer, loader, scheduler, dataset, state, total_steps, steps_per_epoch,
              out: Path) -> dict[str, Any]:
        cfg = self.args
        epochs = math.ceil(total_steps / steps_per_epoch)
        progress = None
        if cfg.progress and accelerator.is_local_main_process:
            from tqdm.auto import tqdm

            progress = tqdm(total=total_steps, initial=state["global_step"], desc="train", unit="step",
                            dynamic_ncols=True)
        model.train()
        t_start, pairs_start = time.perf_counter(), state["pairs"]
        budget = TimeBudget(cfg.optim.max_minutes, start=t_start) if cfg.optim.max_minutes else None
        first_step = state["global_step"]
        history: list[dict[str, Any]] = []
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
                loss, parts = self._step(accelerator, model, optimizer, batch)
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
                    record = {"step": step, "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0],
                              "pairs_per_s": rate, **{f"loss/{k}": v for k, v in parts.items()}}
                    history.append(record)
                    accelerator.log(record, step=step)
                if progress:
                    progress.update(1)
                    progress.set_postfix(loss=f"{loss:.4f}", pairs_s=f"{rate:.1f}", epoch=epoch)
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
                    save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
                if step >= total_steps:
                    done = True
                    break
            else:
                state["epoch"], state["batches_in_epoch"] = epoch + 1, 0
                if not done and epoch + 1 < epochs:
                    save_checkpoint(accelerator, out, state, cfg.keep_checkpoints)
        if progress:
            progress.close()
        train_seconds = time.perf_counter() - t_start
        accelerator.wait_for_everyone()
        if cfg.record_ranks:
            _record_rank(accelerator, model, out, seen)
        summary = {"global_step": state["global_step"], "pairs": state["pairs"], "train_seconds": train_seconds,
                   "pairs_per_s": (state["pairs"] - pairs_start) / max(train_seconds, 1e-9),
                   "processes": accelerator.num_processes, "history": history}
        learned = self.loss.describe()
        if learned:
            summary["loss_state"] = learned
        if budget is not None:
            summary.update(max_minutes=cfg.optim.max_minutes, fitted_steps=state.get("total_steps"),
                           stopped_by_budget=state.get("stopped_by_budget"))
        return summary

    def _step(self, accelerator, model, optimizer, batch) -> tuple[float, dict[str, float]]:
        cfg = self.args
        with accelerator.accumulate(model):
            with accelerator.autocast():
                if cfg.in_batch_negatives:
                    out_ib = model(batch.features, batch.mask, in_batch=True)
                    scores, targets = out_ib.scores, InBatchView(out_ib, batch)
                else:
                    scores, targets = model(batch.features, batch.mask), batch
            loss, parts = self.loss.forward_batch(scores.float(), targets)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), parts


def train(cfg: TrainConfig, accelerator: Accelerator | None = None) -> Path:
    """Train ``cfg`` (model, loss and data from its sections); returns ``<output_dir>/model``."""
    return Trainer(args=cfg, accelerator=accelerator).train()


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
