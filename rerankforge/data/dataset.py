"""Groups -> padded tensors. A batch is B groups of up to G candidates with a mask."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch.utils.data import Dataset

from rerankforge.data.groups import Candidate, Group


@dataclass
class GroupBatch:
    """What every model consumes and every loss reads its targets from.

    ``features`` is whatever the model's ``tokenize`` produced for the real (unpadded) pairs;
    all ``[B, G]`` tensors are aligned with ``mask``. Missing teacher scores are NaN."""

    query_ids: list[str]
    doc_ids: list[list[str]]
    features: dict[str, Any]
    mask: torch.Tensor
    labels: torch.Tensor
    teacher: torch.Tensor
    weights: torch.Tensor
    first_stage: torch.Tensor
    #: ``[B, G, K]`` impressions / clicks per rank (click-log groups with ``views``; else None)
    views: torch.Tensor | None = None
    clicks: torch.Tensor | None = None
    #: per query, the ids of every judged positive of its mined group (sampled or not): in-batch
    #: negatives that are among them are masked (``train.in_batch.InBatchView``). None: unknown.
    positive_ids: list[list[str]] | None = None

    def to(self, device, non_blocking: bool = False) -> GroupBatch:
        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=non_blocking)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x

        return GroupBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def num_pairs(self) -> int:
        return int(self.mask.sum())

    def field(self, name: str) -> torch.Tensor:
        return getattr(self, name)


@dataclass
class SamplingConfig:
    """How a training group is cut from a mined group each epoch.

    ``group_size`` candidates in all (None: every candidate); up to ``max_positives`` candidates
    with label > 0 (None: all that fit, leaving room for one negative), the rest drawn at random
    from the others. A fresh draw every epoch lets a deep mined pool act as many small groups."""

    group_size: int | None = 16
    max_positives: int | None = None
    shuffle_candidates: bool = True
    seed: int = 0


class GroupDataset(Dataset):
    def __init__(self, groups: Sequence[Group], sampling: SamplingConfig | None = None,
                 text_of: Callable[[str], str] | None = None):
        self.groups = groups  # any Sequence[Group]; a lazy Arrow view stays lazy
        self.sampling = sampling or SamplingConfig(group_size=None, shuffle_candidates=False)
        self.text_of = text_of
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def _sample(self, group: Group, rng: random.Random) -> list[Candidate]:
        s = self.sampling
        cands = group.candidates
        if s.group_size is None or len(cands) <= s.group_size:
            chosen = list(cands)
        else:
            pos = [c for c in cands if c.label is not None and c.label > 0]
            rest = [c for c in cands if not (c.label is not None and c.label > 0)]
            room = s.group_size - 1 if rest else s.group_size
            n_pos = min(len(pos), room if s.max_positives is None else min(s.max_positives, room))
            chosen = rng.sample(pos, n_pos) + rng.sample(rest, min(len(rest), s.group_size - n_pos))
        if s.shuffle_candidates:
            rng.shuffle(chosen)
        return chosen

    def __getitem__(self, i: int) -> dict[str, Any]:
        group = self.groups[i]
        # Seeded by (seed, epoch, index) so a resumed run draws exactly the same groups.
        rng = random.Random(f"{self.sampling.seed}-{self.epoch}-{i}")
        chosen = self._sample(group, rng)
        texts = []
        for c in chosen:
            if c.text is not None:
                texts.append(c.text)
            elif self.text_of is not None:
                texts.append(self.text_of(c.doc_id))
            else:
                raise ValueError(f"group {group.query_id!r}: candidate {c.doc_id!r} has no text and no corpus was given")
        positive_ids = [c.doc_id for c in group.candidates if c.label is not None and c.label > 0]
        return {"query_id": group.query_id, "query": group.query, "candidates": chosen, "texts": texts,
                "positive_ids": positive_ids}


def _counts(items: list[dict], attr: str) -> torch.Tensor | None:
    """``[B, G, K]`` per-rank counts (zeros where a candidate has none); None when no candidate has any."""
    lists = [[getattr(c, attr) for c in it["candidates"]] for it in items]
    depth = max((len(v) for row in lists for v in row if v is not None), default=0)
    if not depth:
        return None
    out = torch.zeros(len(items), max(len(row) for row in lists), depth, dtype=torch.float32)
    for b, row in enumerate(lists):
        for g, v in enumerate(row):
            if v:
                out[b, g, : len(v)] = torch.tensor(v, dtype=torch.float32)
    return out


def _matrix(items: list[dict], attr: str, fill: float, default: float) -> torch.Tensor:
    width = max(len(it["candidates"]) for it in items)
    out = torch.full((len(items), width), fill, dtype=torch.float32)
    for b, it in enumerate(items):
        for g, c in enumerate(it["candidates"]):
            v = getattr(c, attr)
            out[b, g] = default if v is None else float(v)
    return out


@dataclass
class GroupCollator:
    """Pads groups to ``[B, G]`` and lets the model tokenize the real pairs."""

    tokenize: Callable[[list[str], list[list[str]]], dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, items: list[dict]) -> GroupBatch:
        width = max(len(it["candidates"]) for it in items)
        mask = torch.zeros(len(items), width, dtype=torch.bool)
        for b, it in enumerate(items):
            mask[b, : len(it["candidates"])] = True
        weights = _matrix(items, "weight", 0.0, 1.0)
        return GroupBatch(
            query_ids=[it["query_id"] for it in items],
            doc_ids=[[c.doc_id for c in it["candidates"]] for it in items],
            features=self.tokenize([it["query"] for it in items], [it["texts"] for it in items]),
            mask=mask,
            labels=_matrix(items, "label", 0.0, 0.0),
            teacher=_matrix(items, "teacher", float("nan"), float("nan")),
            weights=weights,
            first_stage=_matrix(items, "score", float("nan"), float("nan")),
            views=_counts(items, "views"),
            clicks=_counts(items, "clicks"),
            positive_ids=[list(it.get("positive_ids", ())) for it in items],
        )
