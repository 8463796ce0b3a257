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
import os
import pickle
import sys
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
from rerankforge.train.checkpoint import (check_no_pickle, clean_leftovers, is_complete, load_scheduler,
                                          newest_checkpoint, save_checkpoint)
from rerankforge.train.collapse import CollapseMonitor
from rerankforge.train.config import TrainConfig
from rerankforge.train.data_checks import check_groups
from rerankforge.train.in_batch import InBatchView, check_in_batch
from rerankforge.train.dev_eval import DevEvaluator
from rerankforge.train.export import ModelExport
from rerankforge.train.tracking import build_trackers, log_metrics, mixed_precision, start_tracking, training_record
from rerankforge.utils.allocator import tune_cpu_allocator
from rerankforge.utils.io import atomic_write, make_dirs, write_json


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
        # An instance is validated too: a TrainConfig built in code gets the same load-time checks.
        self.args = config_from_dict(TrainConfig, args if args is not None else {}, "Trainer args")
        self.model = model
        self.loss: WeightedSum = build_loss(self.args.loss if loss is None else loss)
        self.train_data = train_data
        self.accelerator = accelerator
        self.text_of = text_of
        self._guard: CollapseMonitor | None = None
        # Python users get the CLI's allocator setting too (1.7x faster CPU steps, utils/allocator.py).
        tune_cpu_allocator()

    # ----------------------------------------------------------------------------- set-up
    def _accelerator(self) -> Accelerator:
        cfg = self.args
        if self.accelerator is not None:
            return self.accelerator
        bf16 = cfg.bf16
        if bf16 and "ACCELERATE_MIXED_PRECISION" not in os.environ and not torch.cuda.is_available():
            from rerankforge.models.precision import cpu_native_bf16

            if not cpu_native_bf16():
                # Emulated bf16 (no AVX512-BF16/AMX) measured 7-12x slower than float32 on a 2-core AVX2
                # EPYC; bf16 is a speed option, so where it cannot be one, train in float32.
                print("note: this CPU has no bf16 hardware (no AVX512-BF16/AMX): training in float32 instead of "
                      "emulated bf16 (several times slower); `accelerate launch --mixed_precision bf16` forces it",
                      file=sys.stderr)
                bf16 = False
        return Accelerator(
            mixed_precision=mixed_precision(bf16),  # an error when accelerate launch says otherwise
            gradient_accumulation_steps=cfg.optim.grad_accum,
            log_with=build_trackers(cfg),
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
        if source.max_groups is not None:
            groups = groups.head(source.max_groups) if hasattr(groups, "head") else groups[: source.max_groups]
        if len(groups) == 0:
            raise ConfigError(f"no training groups in {data if isinstance(data, (str, Path)) else 'train_data'}"
                              f"{' (the file is empty)' if isinstance(data, (str, Path)) and Path(data).is_file() else ''}")
        self._source = data
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

    def _dataset(self, accelerator: Accelerator) -> GroupDataset:
        cfg = self.args
        groups = self._groups(accelerator)
        text_of = self._text_of()
        # Before the first step: a text-less candidate the collection lacks, or groups no loss term
        # can learn from, would otherwise surface mid-run or train at loss 0 (train/data_checks.py).
        groups = check_groups(groups, list(self.loss.terms), text_of, self._source)
        return GroupDataset(groups, SamplingConfig(cfg.data.group_size, cfg.data.max_positives, True, cfg.seed),
                            text_of)

    def training_batches(self, epoch: int = 0) -> list[list[dict[str, Any]]]:
        """The batches ``train()`` draws in ``epoch`` on one process: the same groups in the same
        order with the same candidates, each item ``{query_id, query, candidates, texts, ...}``.
        For recording a run's exact samples or training another framework on them."""
        dataset = self._dataset(self._accelerator())
        dataset.set_epoch(epoch)
        order = EpochShuffle(len(dataset), self.args.seed)
        order.set_epoch(epoch)
        items = [dataset[i] for i in order]
        size = self.args.optim.batch_size
        return [items[s : s + size] for s in range(0, len(items), size)]

    # ------------------------------------------------------------------------------ train
    def train(self, end_tracking: bool = True) -> Path:
        """Run the loop and export the final model; returns ``<output_dir>/model``. With
        ``end_tracking=False`` the trackers stay open (``self.accelerator``) for later metrics."""
        cfg = self.args
        out = Path(cfg.output_dir)
        accelerator = self.accelerator = self._accelerator()
        if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu":
            from rerankforge.models.precision import cpu_native_bf16

            if not cpu_native_bf16():
                # measured on a 2-core AVX2 EPYC: bf16 matmuls ran ~15-40x slower than float32 there
                accelerator.print("warning: bf16 is on but this CPU has no bf16 hardware (no AVX512-BF16/AMX): "
                                  "autocast emulates it and training runs several times slower than with bf16=false")
        set_seed(cfg.seed)
        self._given_base = given_base_model(self.model) if self.model is not None else None
        model = self.model if self.model is not None else build_model(cfg.model)
        cfg.model.type = model.model_type or cfg.model.type  # the resolved config records what trained
        if cfg.model.fast_dropout and accelerator.device.type == "cpu":
            from rerankforge.models.fast_dropout import use_fast_dropout

            use_fast_dropout(model)
        if accelerator.is_main_process:
            make_dirs(out)
            with atomic_write(out / "config.yaml") as fh:
                fh.write(to_yaml(cfg))
        start_tracking(accelerator, cfg)
        if cfg.in_batch_negatives:
            check_in_batch(model)
        dataset = self._dataset(accelerator)
        loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, sampler=EpochShuffle(len(dataset), cfg.seed),
                            collate_fn=GroupCollator(model.tokenize), num_workers=cfg.data.num_workers,
                            # A private generator: creating an iterator must not draw from the global RNG,
                            # or dropout masks after a resume would differ from the uninterrupted run.
                            generator=torch.Generator().manual_seed(cfg.seed))
        # Learned-bias losses own parameters: they live beside the model, train in the same optimizer
        # and are checkpointed with it (state restored on resume); they are not exported.
        self.loss.to(accelerator.device)
        optimizer = build_optimizer(model, cfg.optim, self.loss)
        export = ModelExport(accelerator, model, cfg)  # before prepare: a sharded model is rebuilt from a copy
        self.dev, self._dev_step = DevEvaluator.from_config(cfg), None
        if self.dev is not None and accelerator.is_main_process:
            self.dev.prepare()  # the dev first stage is retrieved once, before the first step
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        if any(True for _ in self.loss.parameters()):
            accelerator.register_for_checkpointing(self.loss)
        steps_per_epoch = math.ceil(len(loader) / cfg.optim.grad_accum)
        # An explicit max_steps wins (validated >= 1); None means epochs decide.
        total_steps = cfg.optim.max_steps if cfg.optim.max_steps is not None else steps_per_epoch * cfg.optim.epochs
        # Not prepared: accelerate would step it once per process; we step once per optimizer step.
        # Not registered for checkpointing either: accelerate would pickle it and unpickle it on
        # resume with weights_only=False; its state goes into scheduler.json (train/checkpoint.py).
        scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
        self._scheduler = scheduler

        state = {"epoch": 0, "batches_in_epoch": 0, "global_step": 0, "pairs": 0}
        if accelerator.is_main_process:
            clean_leftovers(out)
        resume = cfg.resume
        if resume == "auto":
            found = newest_checkpoint(out)
            resume = str(found) if found else None
        if resume:
            resume_path = Path(resume)
            if not resume_path.is_dir():
                raise ConfigError(f"resume: checkpoint directory {resume_path} does not exist")
            if not is_complete(resume_path):
                older = ((resume_path / "custom_checkpoint_0.pkl").exists()
                         and not (resume_path / "checkpoint-complete.json").exists())
                raise ConfigError(f"resume: {resume_path} is not a complete checkpoint (no checkpoint-complete.json "
                                  f"or a file of the wrong size: the run writing it was interrupted"
                                  + (", or an older rerankforge wrote it: those checkpoints pickle the scheduler "
                                     "and are not loaded" if older else "") + ")")
            check_no_pickle(resume_path)
            try:
                accelerator.load_state(resume)
            except pickle.UnpicklingError as err:
                raise ConfigError(f"{resume_path}: refusing to resume: a state file is not plain data "
                                  f"({str(err).strip().splitlines()[0][:200] if str(err).strip() else 'unpickling'})") from None
            state = json.loads((resume_path / "trainer_state.json").read_text())
            load_scheduler(scheduler, resume_path, state["global_step"])
            accelerator.print(f"resumed from {resume} at step {state['global_step']}")
            # A time budget fitted before the interruption keeps its length (the schedule's state has it too).
            total_steps = state.get("total_steps", total_steps)
        accelerator.print(f"training {type(accelerator.unwrap_model(model)).__name__} on {len(dataset)} groups: "
                          f"{total_steps} steps, {accelerator.num_processes} process(es) ({accelerator.distributed_type.value}), "
                          f"device {accelerator.device}, "
                          f"mixed precision {accelerator.mixed_precision}")
        summary = self._loop(accelerator, model, optimizer, loader, scheduler, dataset, state, total_steps,
                             steps_per_epoch, out)
        if self.dev is not None:
            if self._dev_step != state["global_step"]:  # the same decision on every process
                self._evaluate_dev(accelerator, model, state["global_step"])
            if accelerator.is_main_process:
                summary["dev"] = self.dev.summary()
        model_dir = export.save(model, out / "model", best=out / "best" if self.dev and cfg.dev.export_best else None)
        if accelerator.is_main_process:
            write_json(out / "train_summary.json", summary)
            from rerankforge.export.card import write_training_card

            write_training_card(cfg, model_dir, evaluation=False,  # the final evaluation rewrites it
                                extra=self._given_base if self._given_base is not None else None)
        accelerator.wait_for_everyone()
        if end_tracking:
            accelerator.end_training()
        self.model = accelerator.unwrap_model(model)
        self.global_step = state["global_step"]
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
        if self.dev is not None and cfg.dev.at_start and state["global_step"] == 0:
            self._evaluate_dev(accelerator, model, 0)  # before the clock starts: not part of a time budget
        model.train()
        t_start, pairs_start = time.perf_counter(), state["pairs"]
        budget = TimeBudget(cfg.optim.max_minutes, start=t_start) if cfg.optim.max_minutes else None
        first_step = state["global_step"]
        history: list[dict[str, Any]] = []
        seen: list[str] = []
        guard = self._guard = CollapseMonitor(cfg.collapse, self.loss, cfg.stop_on_collapse)
        self._masked_false_negatives = state.get("in_batch_masked_false_negatives", 0)
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
                if cfg.in_batch_negatives:
                    state["in_batch_masked_false_negatives"] = self._masked_false_negatives
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                state["global_step"] += 1
                step = state["global_step"]
                rate = (state["pairs"] - pairs_start) / max(time.perf_counter() - t_start, 1e-9)
                if step % cfg.log_every == 0 or step == total_steps:
                    record = {"step": step, "epoch": epoch, "loss": loss, "lr": scheduler.get_last_lr()[0],
                              "pairs_per_s": rate, **{f"loss/{k}": v for k, v in parts.items()}, **guard.window(step)}
                    history.append(record)
                    accelerator.log(training_record(record), step=step)
                    if cfg.stop_on_collapse and _agree(accelerator, guard.should_stop):
                        state["stopped_by_collapse"] = guard.stopped_at = step
                        done = True
                        break
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
                    # every 10 steps across processes (a broadcast); every step on one, where slow steps
                    # (a MiniLM bi-encoder on 2 CPU cores: ~15 s) would otherwise overrun the budget
                    check = step % 10 == 0 or accelerator.num_processes == 1
                    if check and step < total_steps and _agree(accelerator, budget.expired(now)):
                        state["stopped_by_budget"] = step
                        done = True
                        break
                if self.dev is not None and step % cfg.dev.every == 0 and step < total_steps:
                    self._evaluate_dev(accelerator, model, step)
                if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                    save_checkpoint(accelerator, out, state, cfg.keep_checkpoints, self._scheduler)
                if step >= total_steps:
                    done = True
                    break
            else:
                state["epoch"], state["batches_in_epoch"] = epoch + 1, 0
                if not done and epoch + 1 < epochs:
                    save_checkpoint(accelerator, out, state, cfg.keep_checkpoints, self._scheduler)
        if progress:
            progress.close()
        train_seconds = time.perf_counter() - t_start
        accelerator.wait_for_everyone()
        if cfg.record_ranks:
            _record_rank(accelerator, model, out, seen)
        summary = {"global_step": state["global_step"], "pairs": state["pairs"], "train_seconds": train_seconds,
                   "pairs_per_s": (state["pairs"] - pairs_start) / max(train_seconds, 1e-9),
                   "processes": accelerator.num_processes, "history": history, "collapse": guard.summary()}
        if cfg.in_batch_negatives:
            # this process' rows only: how many (query, other document) pairs were left out as known positives
            summary["in_batch_masked_false_negatives"] = self._masked_false_negatives
        learned = self.loss.describe()
        if learned:
            summary["loss_state"] = learned
        if budget is not None:
            summary.update(max_minutes=cfg.optim.max_minutes, fitted_steps=state.get("total_steps"),
                           stopped_by_budget=state.get("stopped_by_budget"))
        return summary

    def _evaluate_dev(self, accelerator, model, step: int) -> None:
        """The dev evaluation on the main process (the others wait), logged as ``dev/<measure>``."""
        self._dev_step = step
        if accelerator.is_main_process:
            metrics = self.dev(accelerator.unwrap_model(model), step)
            accelerator.print(f"step {step} dev " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            log_metrics(accelerator, metrics, "dev", step)
        accelerator.wait_for_everyone()

    def _step(self, accelerator, model, optimizer, batch) -> tuple[float, dict[str, float]]:
        cfg = self.args
        with accelerator.accumulate(model):
            with accelerator.autocast():
                if cfg.in_batch_negatives:
                    out_ib = model(batch.features, batch.mask, in_batch=True)
                    scores, targets = out_ib.scores, InBatchView(out_ib, batch, cfg.in_batch_mask_positives)
                    self._masked_false_negatives += targets.masked_false_negatives
                else:
                    scores, targets = model(batch.features, batch.mask), batch
            loss, parts = self.loss.forward_batch(scores.float(), targets)
            if self._guard is not None:
                self._guard.observe(scores, targets, float(loss.detach()))
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.optim.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), parts


def given_base_model(model) -> dict[str, Any]:
    """The card's base model of a model handed to the Trainer (its config says where it was
    loaded from; ``model.name_or_path`` of the training config does not describe it)."""
    from rerankforge.export.card import base_model_id, describe_base_model

    inner = getattr(model, "model", None)
    inner = getattr(inner, "base_model", inner) if type(inner).__name__.startswith("Peft") else inner
    name = getattr(getattr(inner, "config", None), "_name_or_path", None) or None
    return {"base_model": describe_base_model(name) if name else "—", "base_model_id": base_model_id(name) if name else None}


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
