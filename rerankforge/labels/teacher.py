"""Teacher scores from any reranker this project can load (``load_reranker``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rerankforge.data.groups import Group
from rerankforge.labels.job import Labeler, QueryLabels, dir_stamp
from rerankforge.models.base import Reranker, load_reranker


@dataclass
class TeacherScoring:
    """How a teacher scores mined groups (the ``teacher`` label job's batching and precision)."""

    batch_size: int = 64
    bf16: bool = True
    #: queries per batch: the unit of progress saved (resume granularity)
    batch_queries: int = 32


class TeacherLabeler(Labeler):
    """``teacher = model.score_pairs(query, text)`` for every candidate. All pairs of a batch of
    queries are scored together so ``score_pairs`` can sort them by length (little padding)."""

    kind = "teacher"
    fields = ("teacher",)

    def __init__(self, model: Reranker | str | Path, batch_size: int = 64, bf16: bool = True,
                 max_length: int | None = None, device: str | None = None):
        self.model_path = str(model) if not isinstance(model, Reranker) else f"<{type(model).__name__}>"
        kwargs = {"max_length": max_length} if max_length else {}
        self.model = model if isinstance(model, Reranker) else load_reranker(model, **kwargs)
        if device:
            self.model.to(device)
        elif not isinstance(model, Reranker):
            import torch

            if torch.cuda.is_available():
                self.model.to("cuda")
        self.batch_size = batch_size
        self.bf16 = bf16
        self.max_length = max_length

    def settings(self):
        return {"model": self.model_path, "model_files": dir_stamp(self.model_path), "bf16": self.bf16,
                "max_length": self.max_length}

    def label(self, groups: Sequence[Group], texts) -> list[QueryLabels]:
        queries = [g.query for g, ts in zip(groups, texts) for _ in ts]
        docs = [t for ts in texts for t in ts]
        scores = self.model.score_pairs(queries, docs, batch_size=self.batch_size, bf16=self.bf16)
        out, k = [], 0
        for g in groups:
            n = len(g.candidates)
            out.append(QueryLabels({"teacher": {c.doc_id: float(s) for c, s in zip(g.candidates, scores[k : k + n])}}))
            k += n
        return out
