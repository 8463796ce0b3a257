"""Graded labels from qrels through a gain map (e.g. SciFact's 1 -> 1, TREC's 2 -> 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rerankforge.data.groups import Group
from rerankforge.data.labels import apply_gain_map
from rerankforge.errors import ConfigError
from rerankforge.labels.job import Labeler, QueryLabels


class GradedLabeler(Labeler):
    """``label = gain_map.get(grade, grade)`` for judged candidates; unjudged candidates get 0
    (``unjudged="zero"``, the usual assumption for mined negatives) or no label (``"none"``,
    for losses that should ignore them)."""

    kind = "graded"
    fields = ("label",)
    needs_text = False

    def __init__(self, qrels: Mapping[str, Mapping[str, int]], gain_map: Mapping[int, float] | None = None,
                 unjudged: str = "zero", qrels_source: str = ""):
        if unjudged not in ("zero", "none"):
            raise ConfigError(f"unjudged must be 'zero' or 'none', got {unjudged!r}")
        self.qrels = qrels
        self.gain_map = dict(gain_map or {})
        self.unjudged = unjudged
        self.qrels_source = qrels_source

    def settings(self):
        return {"gain_map": {str(k): v for k, v in sorted(self.gain_map.items())}, "unjudged": self.unjudged,
                "qrels": self.qrels_source}

    def label(self, groups: Sequence[Group], texts) -> list[QueryLabels]:
        out = []
        for g in groups:
            judged = self.qrels.get(g.query_id, {})
            values: dict[str, float | None] = {}
            n_judged = 0
            for c in g.candidates:
                if c.doc_id in judged:
                    values[c.doc_id] = apply_gain_map(int(judged[c.doc_id]), self.gain_map)
                    n_judged += 1
                else:
                    values[c.doc_id] = 0.0 if self.unjudged == "zero" else None
            out.append(QueryLabels({"label": values}, info={"judged_pairs": n_judged,
                                                            "unjudged_pairs": len(g.candidates) - n_judged}))
        return out
