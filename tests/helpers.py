"""Small builders shared by tests: tiny models, hand-made groups and collections."""

from __future__ import annotations

import json
from pathlib import Path

from rerankforge.data.groups import Candidate, Group, write_groups

WORDS = ("protein gene cell cancer virus immune brain heart blood drug trial dose risk mouse human "
         "signal receptor pathway growth tumour infection vaccine diabetes obesity insulin").split()


def make_groups(n: int = 8, size: int = 5, seed: int = 0) -> list[Group]:
    import random

    rng = random.Random(seed)
    groups = []
    for q in range(n):
        qwords = rng.sample(WORDS, 3)
        cands = []
        pos_at = rng.randrange(size)
        for c in range(size):
            words = (qwords if c == pos_at else []) + rng.sample(WORDS, 6)
            cands.append(Candidate(f"d{q}-{c}", " ".join(words), 1.0 if c == pos_at else 0.0,
                                   teacher=float(rng.gauss(0, 1)) + (3.0 if c == pos_at else 0.0), rank=c + 1))
        groups.append(Group(f"q{q}", " ".join(qwords), cands))
    return groups


def write_tiny_groups(path: Path, **kw) -> Path:
    write_groups(path, make_groups(**kw))
    return path


def make_collection(root: Path, groups: list[Group], split: str = "test") -> Path:
    """A BEIR collection holding exactly the documents and judgments of ``groups``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    docs = {c.doc_id: c.text for g in groups for c in g.candidates}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": g.query_id, "text": g.query}) + "\n" for g in groups))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{g.query_id}\t{c.doc_id}\t{int(c.label)}" for g in groups
                                               for c in g.candidates if c.label]
    (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root
