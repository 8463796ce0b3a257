"""The few-lines Python API (what ``from rerankforge import ...`` gives), over the shared steps.

    from rerankforge import CrossEncoder, Trainer, TrainConfig, evaluate, mine

    groups = mine("bundled:scifact", "train", negatives=7)
    model = CrossEncoder("default", max_length=192)
    Trainer(model=model, loss="listwise_ce", train_data=groups, args=TrainConfig(output_dir="runs/x")).train()
    model.rank("vitamin D and bone health", ["doc one", "doc two"])
    evaluate(model, "bundled:scifact", "test")
"""

from __future__ import annotations

import dataclasses
import tempfile
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rerankforge.config import config_from_dict
from rerankforge.data.groups import Group, read_groups
from rerankforge.errors import ConfigError
from rerankforge.mining.config import MineConfig


def mine(collection, split: str = "train", *, out: str | Path | None = None, **options: Any) -> list[Group]:
    """Training groups for the judged queries of ``split``: positives plus hard negatives from
    the first stage (BM25 by default), with the false-negative filters of ``NegativePolicy``.

    ``options`` are :class:`MineConfig` fields (``retriever``, ``depth``, ``max_queries``, ``policy``
    as a dict, ...) or the flag names of nested ones (``negatives``, ``rank_max``, ``margin_rel``,
    ``k1``, ...). With ``out`` the groups (and their report) are also written there."""
    from rerankforge.data.beir import Collection
    from rerankforge.pipelines import steps

    opened = collection if isinstance(collection, Collection) else None
    cfg = mine_config(str(opened.root) if opened else str(collection), split, **options)
    if out is not None:
        cfg.out = str(out)
        return read_groups(steps.mine(cfg, opened).path)
    with tempfile.TemporaryDirectory(prefix="rerankforge-mine-") as tmp:
        cfg.out = str(Path(tmp) / "groups.jsonl")
        return read_groups(steps.mine(cfg, opened).path)


def mine_config(collection: str, split: str, **options: Any) -> MineConfig:
    """A :class:`MineConfig` from flat keyword options (see :func:`mine`)."""
    nested: dict[str, Any] = {"collection": collection, "split": split, "progress": False}
    paths = flag_paths(MineConfig)
    top = {f.name for f in dataclasses.fields(MineConfig)}
    for key, value in options.items():
        if key in top:
            nested[key] = value
        elif key in paths:
            node = nested
            *parents, leaf = paths[key].split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        else:
            raise ConfigError(f"mine: unknown option {key!r}; accepted: {', '.join(sorted(top | set(paths)))}")
    return config_from_dict(MineConfig, nested, "mine()")


def flag_paths(schema: type, prefix: str = "") -> dict[str, str]:
    """``{flag name with underscores: dotted config path}`` of every flagged field of ``schema``."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        path = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(flag_paths(hints[f.name], path + "."))
            continue
        flag = f.metadata.get("flag")
        for name in ([flag] if isinstance(flag, str) else list(flag or ())):
            key = name.lstrip("-").replace("-", "_")
            out[key[3:] if key.startswith("no_") else key] = path
    return out


def evaluate(model_or_run, collection, split: str = "test", *, depth: int = 100, run=None,
             measures: Sequence[str] | None = None, max_queries: int | None = None, batch_size: int = 64,
             bf16: bool = True, progress: bool = False) -> dict[str, Any]:
    """ir-measures metrics on ``split``'s judgments.

    Given a run (``{qid: [(doc id, score), ...]}``) it returns that run's metrics. Given a
    reranker (or a model directory) it reranks the first stage (``run``: a TREC file or a run;
    default BM25 top-``depth``) and returns ``{"first_stage": {...}, "reranked": {...},
    "rerank_speed": {...}, ...}``."""
    from rerankforge.data.beir import Collection
    from rerankforge.eval.metrics import DEFAULT_MEASURES
    from rerankforge.eval.metrics import evaluate as evaluate_run
    from rerankforge.pipelines.steps import evaluate_reranker

    collection = Collection.of(collection)
    measures = list(measures or DEFAULT_MEASURES)
    if isinstance(model_or_run, Mapping):
        return evaluate_run(collection.qrels(split), model_or_run, measures)
    report = evaluate_reranker(model_or_run, collection, split, run, depth, measures, batch_size, bf16,
                               progress=progress, max_queries=max_queries)
    report.pop("_runs")
    return report
