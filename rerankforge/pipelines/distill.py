"""Distil a reranker into a smaller one: teacher scores on mined groups -> student training ->
teacher and student evaluated side by side in one run.

    rerankforge distill --config configs/distill_scifact.yaml

1. Groups: ``groups`` (mined, e.g. by ``rerankforge mine``), or mined here from ``mine``.
2. Teacher scores: the ``teacher`` label job (resumable) adds ``teacher`` to every candidate;
   skipped when the groups already carry teacher scores for every candidate.
3. Student init: ``student.init=layers`` keeps a subset of the teacher's transformer layers
   (embeddings, the chosen layers in order, pooler and head copied; the idea of DistilBERT /
   "Well-Read Students Learn Better" layer-dropping, Sanh et al. 2019, Turc et al. 2019);
   ``student.init=checkpoint`` starts from any (smaller) checkpoint.
4. Training: the project trainer with the configured losses; at least one must learn from the
   teacher (``kl``, ``margin_mse``), optionally mixed with a graded loss (``listwise_ce``).
5. Evaluation: both models rerank the same first-stage pairs with the same batch size and
   precision. Scoring alternates between the two models chunk by chunk (after a warm-up), so
   load from other processes on a shared machine affects both throughputs alike.
   ``<output_dir>/distill_report.json`` = ``{"teacher": {...}, "student": {...}, ...}`` with
   ``nDCG@10``, ``RR@10`` (and the other measures) and ``pairs_per_s``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from rerankforge.errors import ConfigError
from rerankforge.labels.teacher import TeacherScoring
from rerankforge.mining.config import MineConfig
from rerankforge.train.config import EvalConfig, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class StudentConfig:
    #: "layers": keep ``layers`` of the teacher; "checkpoint": start from ``checkpoint``
    init: str = "layers"
    #: teacher layer indices to keep, in order (0-based)
    layers: list[int] = field(default_factory=lambda: [0, 5])
    #: model directory for init=checkpoint ("default" = the bundled MiniLM-L6)
    checkpoint: Optional[str] = None
    #: model type for init=checkpoint (init=layers uses the teacher's)
    type: str = "cross_encoder"
    #: student max_length (null: the teacher's, so both read the same tokens)
    max_length: Optional[int] = None


@dataclass
class DistillEvalConfig(EvalConfig):
    #: queries per timing chunk; the two models alternate chunk by chunk
    chunk_queries: int = 10
    bf16: bool = True
    #: where both models score: "auto" = cuda when available, else cpu
    device: str = "auto"


@dataclass
class DistillConfig:
    #: exported teacher model directory
    teacher: Optional[str] = None
    #: a training config that exports ``teacher``: trained first when the teacher is missing
    teacher_recipe: Optional[str] = None
    #: mined groups JSONL (null: mine them with ``mine``)
    groups: Optional[str] = None
    #: the mining step (rerankforge.mining.config.MineConfig); cached under <output_dir>/groups
    mine: Optional[MineConfig] = None
    #: the student model ends up in <output_dir>/model
    output_dir: str = "runs/distill"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher_scoring: TeacherScoring = field(default_factory=TeacherScoring)
    #: the trainer's settings; output_dir, data.train_groups and model.{type,name_or_path,max_length}
    #: are filled in by distill
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: DistillEvalConfig = field(default_factory=DistillEvalConfig)
    progress: bool = True
    #: skip groups, teacher scores and training: re-run only the comparison of the teacher with
    #: the student already in <output_dir>/model (e.g. to re-measure speed on a quieter machine)
    eval_only: bool = False


# --------------------------------------------------------------------------- student init


def _layer_list(model: nn.Module, n_layers: int) -> str:
    """The dotted name of the ModuleList holding the transformer blocks."""
    found = [name for name, mod in model.named_modules()
             if isinstance(mod, nn.ModuleList) and len(mod) == n_layers
             and name.split(".")[-1] in ("layer", "layers", "h", "block")]
    if len(found) != 1:
        raise ConfigError(f"{type(model).__name__}: cannot find its transformer layer list (candidates: {found})")
    return found[0]


def subset_layers(model, layers: list[int]):
    """A copy of a Hugging Face model that keeps only ``layers`` (in that order); every weight
    outside the layer stack (embeddings, pooler, head) is copied unchanged."""
    cfg = copy.deepcopy(model.config)
    n = cfg.num_hidden_layers
    layers = [int(i) for i in layers]
    if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < n for i in layers):
        raise ConfigError(f"student.layers {layers} must be distinct indices in 0..{n - 1}")
    stack = _layer_list(model, n)
    cfg.num_hidden_layers = len(layers)
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = [cfg.layer_types[i] for i in layers]
    student = type(model)(cfg)
    source = model.state_dict()
    state = {}
    for key, value in source.items():
        if key.startswith(stack + "."):
            idx, rest = key[len(stack) + 1 :].split(".", 1)
            if int(idx) in layers:
                state[f"{stack}.{layers.index(int(idx))}.{rest}"] = value.clone()
        else:
            state[key] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"layer subset of {type(model).__name__} does not line up: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    return student.to(next(model.parameters()).dtype)


def init_student_from_layers(teacher_dir: str | Path, layers: list[int], out_dir: str | Path,
                             max_length: int | None = None) -> Path:
    """Save a student built from ``layers`` of the teacher at ``teacher_dir`` to ``out_dir``."""
    from transformers import PreTrainedModel

    from rerankforge.models import load_reranker

    reranker = load_reranker(teacher_dir)
    hf = getattr(reranker, "model", None)
    if not isinstance(hf, PreTrainedModel):
        raise ConfigError(f"{teacher_dir}: a {reranker.model_type} keeps no Hugging Face model in `.model`; "
                          f"use student.init=checkpoint")
    reranker.model = subset_layers(hf, layers)
    if getattr(reranker, "calibration", None) is not None:
        reranker.set_calibration(None)  # the teacher's score calibration does not describe the student
    if max_length:
        reranker.max_length = max_length
    out_dir = Path(out_dir)
    reranker.save_pretrained(out_dir)
    return out_dir


def count_layers(reranker) -> int | None:
    cfg = getattr(getattr(reranker, "model", None), "config", None)
    return getattr(cfg, "num_hidden_layers", None)


# --------------------------------------------------------------------------- groups + teacher scores


def has_teacher_scores(path: str | Path) -> bool:
    from rerankforge.data.groups import iter_groups

    return all(c.teacher is not None for g in iter_groups(path) for c in g.candidates)


def teacher_scores(groups: str | Path, teacher: str | Path, out: Path, scoring: TeacherScoring,
                   collection: str | None = None, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Groups with teacher scores: ``groups`` itself when complete, else the teacher label job's output."""
    from rerankforge.labels.job import done_path

    if has_teacher_scores(groups):
        print(f"{groups}: every candidate already has a teacher score; not rescoring")
        info: dict[str, Any] = {"skipped": True, "reason": "groups already had teacher scores"}
        record = done_path(groups)
        if record.exists():  # labelled by `rerankforge label teacher`: keep what that job measured
            job = json.loads(record.read_text())
            info.update({"label_job": job.get("summary"), "teacher": job.get("job", {}).get("settings")})
        return Path(groups), info
    from rerankforge.pipelines.steps import label_teacher

    summary = label_teacher(groups, teacher, out, collection=collection, batch_size=scoring.batch_size,
                            bf16=scoring.bf16, batch_queries=scoring.batch_queries, progress=progress)
    if summary.computed == 0:
        print(f"teacher scores: reusing {out} (labelled earlier by the same teacher from the same groups)")
    else:
        print(f"teacher scores: {summary.pairs} pairs in {summary.seconds:.1f}s ({summary.pairs_per_s:.1f} pairs/s, "
              f"{summary.resumed} queries resumed) -> {out}")
    return out, summary.to_json()


# --------------------------------------------------------------------------- side-by-side evaluation


def compare(models: dict[str, Any], collection, split: str, run=None, depth: int = 100,
            measures=("nDCG@10", "RR@10"), batch_size: int = 64, bf16: bool = True, chunk_queries: int = 10,
            progress: bool = True, max_queries: int | None = None) -> dict[str, Any]:
    """Rerank the same first-stage pairs with every model and time them in alternation."""
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import truncate
    from rerankforge.eval import evaluate
    from rerankforge.pipelines.steps import first_stage_run

    if not isinstance(collection, Collection):
        collection = Collection(collection)
    qrels = collection.qrels(split)
    first = run if isinstance(run, dict) else first_stage_run(collection, split, run, depth, max_queries)
    first = truncate({q: d for q, d in first.items() if q in qrels and q in collection.queries}, depth)
    qrels = {q: qrels[q] for q in first} if max_queries else qrels
    qids = list(first)
    names = list(models)
    if not qids:
        raise ConfigError(f"no judged {split} query has first-stage candidates")
    # Warm-up outside the clock: the first bf16 batches build kernels and allocate buffers.
    q0 = collection.queries[qids[0]]
    warm = [collection.corpus.text(d) for d, _ in first[qids[0]][: min(batch_size, 8)]]
    for name in names:
        models[name].score_pairs([q0] * len(warm), warm, batch_size=batch_size, bf16=bf16)

    scored = {name: {} for name in names}
    seconds = {name: 0.0 for name in names}
    chunk_rates: dict[str, list[float]] = {name: [] for name in names}
    chunks = [qids[s : s + chunk_queries] for s in range(0, len(qids), chunk_queries)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(qids), desc="evaluate " + " vs ".join(names), unit="query", dynamic_ncols=True)
    pairs = 0
    for c, chunk in enumerate(chunks):
        pq = [(q, d) for q in chunk for d, _ in first[q]]
        queries = [collection.queries[q] for q, _ in pq]
        docs = [collection.corpus.text(d) for _, d in pq]
        pairs += len(pq)
        for name in (names if c % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            scores = models[name].score_pairs(queries, docs, batch_size=batch_size, bf16=bf16)
            elapsed = time.perf_counter() - start
            seconds[name] += elapsed
            chunk_rates[name].append(len(pq) / max(elapsed, 1e-9))
            for (q, d), s in zip(pq, scores.tolist()):
                scored[name].setdefault(q, []).append((d, s))
        if bar is not None:
            bar.update(len(chunk))
            bar.set_postfix({n: f"{pairs / max(seconds[n], 1e-9):.0f}p/s" for n in names})
    if bar is not None:
        bar.close()
    report: dict[str, Any] = {"first_stage": evaluate(qrels, first, measures)}
    runs = {"first_stage": first}
    for name in names:
        reranked = {q: sorted(docs, key=lambda e: -e[1]) for q, docs in scored[name].items()}
        runs[name] = reranked
        report[name] = {**evaluate(qrels, reranked, measures), "pairs": pairs, "seconds": seconds[name],
                        "pairs_per_s": pairs / max(seconds[name], 1e-9),
                        "pairs_per_s_median_chunk": float(np.median(chunk_rates[name]))}
    if len(names) == 2:
        # Each chunk is scored by both models back to back: the per-chunk ratio compares them under
        # the same momentary load, and its median ignores chunks hit by a load spike or a pause.
        a, b = names
        report["speedup_median_chunk"] = float(np.median(np.array(chunk_rates[b]) / np.array(chunk_rates[a])))
    report["_runs"] = runs
    report["setup"] = {"split": split, "depth": depth, "queries": len(qids), "pairs": pairs,
                       "batch_size": batch_size, "bf16": bf16, "chunk_queries": chunk_queries,
                       "torch_threads": torch.get_num_threads(),
                       "device": str(next(iter(models.values())).device)}
    return report


# --------------------------------------------------------------------------- the pipeline


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run_distill(cfg: DistillConfig) -> dict[str, Any]:
    from accelerate import PartialState

    from rerankforge.losses import build_loss
    from rerankforge.models import load_reranker
    from rerankforge.train import train
    from rerankforge.config import to_yaml
    from rerankforge.utils.io import atomic_write

    from rerankforge.pipelines.steps import ensure_model, mine_cached

    if not cfg.teacher:
        raise ConfigError("distill: `teacher` (an exported model directory) is not set")
    if not cfg.eval_only:
        from rerankforge.train.tracking import mixed_precision

        mixed_precision(cfg.train.bf16)  # before the teacher labels anything: the student's training would refuse
        ensure_model(cfg.teacher, cfg.teacher_recipe, "teacher")
    if not Path(cfg.teacher).is_dir():
        raise FileNotFoundError(f"teacher model directory {cfg.teacher} does not exist")
    if not cfg.eval.collection:
        raise ConfigError("distill: eval.collection is not set (teacher and student are compared on it)")
    loss = build_loss(list(cfg.train.loss))
    if not any(term.target == "teacher" for term in loss.terms):
        raise ConfigError(f"distill: no loss learns from the teacher ({', '.join(t.name for t in loss.terms)}); "
                          f"add kl or margin_mse to train.loss")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / ("distill_eval_config.yaml" if cfg.eval_only else "distill_config.yaml")) as fh:
        fh.write(to_yaml(cfg))
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()

    if cfg.eval_only:
        earlier = _previous(out, "timings_s") or {}
        timings.update({k: v for k, v in earlier.items() if k not in ("evaluate", "total")})
        return _evaluate_and_report(cfg, out, load_reranker(cfg.teacher), out / "model", timings, t0,
                                    _previous(out, "teacher_labels"), _previous(out, "student_init"))
    if cfg.groups:
        groups = Path(cfg.groups)
        if not groups.exists():
            raise FileNotFoundError(f"groups file {groups} does not exist")
    elif cfg.mine is not None:
        with PartialState().main_process_first():
            mined = mine_cached(cfg.mine, out / "groups")
        groups = mined.path
        print(f"{'reusing' if mined.reused else 'mined'} {mined.groups_written} groups -> {groups}")
    else:
        raise ConfigError("distill: set `groups` (mined groups JSONL) or a `mine` section")
    lap("groups")

    text_collection = cfg.train.data.collection or (cfg.mine.collection if cfg.mine else None)
    labelled, label_summary = teacher_scores(groups, cfg.teacher, out / "groups.teacher.jsonl", cfg.teacher_scoring,
                                             text_collection, cfg.progress)
    lap("teacher_scores")

    teacher_meta = json.loads((Path(cfg.teacher) / "rerankforge.json").read_text()) \
        if (Path(cfg.teacher) / "rerankforge.json").exists() else {"model_type": "cross_encoder"}
    teacher = load_reranker(cfg.teacher)
    max_length = cfg.student.max_length or getattr(teacher, "max_length", None) or cfg.train.model.max_length
    if cfg.student.init == "layers":
        init_dir = init_student_from_layers(cfg.teacher, list(cfg.student.layers), out / "student_init", max_length)
        student_type, student_path = teacher_meta["model_type"], str(init_dir)
    elif cfg.student.init == "checkpoint":
        if not cfg.student.checkpoint:
            raise ConfigError("student.init=checkpoint needs student.checkpoint")
        student_type, student_path = cfg.student.type, cfg.student.checkpoint
    else:
        raise ConfigError(f"student.init must be 'layers' or 'checkpoint', got {cfg.student.init!r}")
    lap("student_init")

    tcfg = copy.deepcopy(cfg.train)
    tcfg.output_dir = str(out)
    tcfg.data.train_groups = str(labelled)
    tcfg.model.type, tcfg.model.name_or_path, tcfg.model.max_length = student_type, student_path, max_length
    tcfg.eval.collection = None
    if not cfg.groups and cfg.mine is not None and not cfg.mine.text:
        tcfg.data.collection = tcfg.data.collection or cfg.mine.collection  # texts were left out of the groups
    tcfg.progress = cfg.progress
    student_dir = train(tcfg)
    lap("train_student")
    if not PartialState().is_main_process:
        return {}
    init = {"init": cfg.student.init, "layers": list(cfg.student.layers) if cfg.student.init == "layers" else None,
            "from": student_path}
    return _evaluate_and_report(cfg, out, teacher, student_dir, timings, t0, label_summary, init)


def _previous(out: Path, key: str) -> Any:
    path = out / "distill_report.json"
    return json.loads(path.read_text()).get(key) if path.exists() else None


def _evaluate_and_report(cfg: DistillConfig, out: Path, teacher, student_dir: Path, timings: dict[str, float],
                         t0: float, label_summary: Any, student_init: Any) -> dict[str, Any]:
    from rerankforge.data.trec import write_run
    from rerankforge.models import load_reranker
    from rerankforge.utils.io import write_json
    from rerankforge.utils.table import metrics_table

    if not (Path(student_dir) / "rerankforge.json").exists():
        raise FileNotFoundError(f"no trained student at {student_dir}; run distill without eval_only first")
    t = time.perf_counter()
    student = load_reranker(student_dir)
    ev = cfg.eval
    device = ev.device if ev.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device)
    student.to(device)
    measures = list(dict.fromkeys(["nDCG@10", "RR@10", *ev.measures]))
    result = compare({"teacher": teacher, "student": student}, ev.collection, ev.split, ev.run, ev.depth, measures,
                     ev.batch_size, ev.bf16, ev.chunk_queries, cfg.progress, ev.max_queries)
    timings["evaluate"] = round(time.perf_counter() - t, 1)
    runs = result.pop("_runs")
    for name, run in runs.items():
        write_run(out / "eval" / f"{name}.trec", run, tag=name)
    for name, model, path in (("teacher", teacher, cfg.teacher), ("student", student, student_dir)):
        result[name].update({"model": str(path), "layers": count_layers(model), "parameters": _parameters(model),
                             "max_length": getattr(model, "max_length", None)})
    result["retention"] = {m: result["student"][m] / result["teacher"][m] if result["teacher"][m] else None
                           for m in measures}
    result["speedup"] = result["student"]["pairs_per_s"] / result["teacher"]["pairs_per_s"]
    summary_path = out / "train_summary.json"
    train_summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result["train"] = {k: train_summary[k] for k in ("global_step", "pairs", "train_seconds", "pairs_per_s")
                       if k in train_summary}
    result["teacher_labels"] = label_summary
    result["student_init"] = student_init
    result["timings_s"] = {**timings, "total": round(time.perf_counter() - t0, 1)}
    ordered = {"teacher": result.pop("teacher"), "student": result.pop("student"), **result}
    write_json(out / "distill_report.json", ordered)

    rows = {}
    for name in ("teacher", "student"):
        r = ordered[name]
        rows[f"{name} ({r['layers']} layers)"] = {**{m: r[m] for m in measures},
                                                  "pairs/s": int(round(r["pairs_per_s"]))}
    rows["first stage"] = dict(ordered["first_stage"])
    metrics_table(rows, title=f"{Path(ev.collection).name} {ev.split}: reranking top-{ev.depth}, "
                              f"{ordered['setup']['pairs']} pairs, batch {ev.batch_size}, bf16={ev.bf16}")
    print(f"student keeps {100 * ordered['retention']['nDCG@10']:.1f}% of the teacher's nDCG@10 at "
          f"{ordered['speedup']:.2f}x its pairs/s (median per-chunk ratio {ordered['speedup_median_chunk']:.2f}x) "
          f"-> {out / 'distill_report.json'}")
    _write_card(cfg, out, Path(student_dir), ordered, measures)
    return ordered


def _write_card(cfg: DistillConfig, out: Path, student_dir: Path, report: dict[str, Any], measures) -> None:
    """The student's card: the training facts of its run plus the teacher/student comparison."""
    from rerankforge.config import command_line
    from rerankforge.export.card import card_info_from_output_dir, write_model_card
    from rerankforge.export.hub import maybe_push

    if not (out / "config.yaml").exists():
        return
    info = card_info_from_output_dir(out, command_line("distill", cfg))
    info.pop("evaluation", None)  # distill evaluates in distill_report.json, not eval.json
    keep = [*measures, "pairs_per_s", "layers", "parameters"]
    info["distillation"] = {"collection": cfg.eval.collection, "split": cfg.eval.split, "depth": cfg.eval.depth,
                            "teacher_model": str(cfg.teacher),
                            "teacher": {k: report["teacher"].get(k) for k in keep},
                            "student": {k: report["student"].get(k) for k in keep}}
    write_model_card(student_dir, info)
    maybe_push(student_dir, cfg.train.card)
