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


# A tiny collection and pairs for the calibration / export / report / rerank-option tests.
QUERIES = ["protein receptor signal", "tumour growth pathway", "vaccine immune dose"]
DOCS = ["receptor protein signal pathway in mouse cells", "a trial of insulin dose in obese humans",
        "immune response to the vaccine after a second dose in a human trial with many words " * 3]


def write_tiny_collection(root: Path, n: int = 10, size: int = 6) -> tuple[Path, Path]:
    """BEIR collection with disjoint 'train' (first half) and 'test' (second half) queries,
    plus a first-stage run of every query's candidates."""
    groups = make_groups(n=n, size=size, seed=3)
    (root / "qrels").mkdir(parents=True)
    docs = {c.doc_id: c.text for g in groups for c in g.candidates}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": g.query_id, "text": g.query}) + "\n" for g in groups))
    for split, part in (("train", groups[: n // 2]), ("test", groups[n // 2 :])):
        lines = ["query-id\tcorpus-id\tscore"]
        # graded: the planted positive is grade 2, one other candidate grade 1
        lines += [f"{g.query_id}\t{c.doc_id}\t{2 if c.label else 1}" for g in part for i, c in enumerate(g.candidates)
                  if c.label or i == (0 if not g.candidates[0].label else 1)]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    run = root / "run.trec"
    run.write_text("".join(f"{g.query_id} Q0 {c.doc_id} {r} {10 - r} bm25\n" for g in groups
                           for r, c in enumerate(g.candidates, start=1)))
    return root, run


def write_adapt_collection(root, n_docs=40, n_test=6, seed=5):
    """A corpus with titles (pseudo-queries) and judged test queries, for `adapt` (seconds)."""
    import json
    import random

    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True)
    docs, queries, qrels = {}, {}, []
    for i in range(n_docs):
        topic = rng.sample(WORDS, 4)
        title = " ".join(topic + rng.sample(WORDS, 2))
        body = " ".join(rng.sample(WORDS, 8) + topic + rng.sample(WORDS, 8))
        docs[f"d{i}"] = {"_id": f"d{i}", "title": title, "text": body}
        if i < n_test:
            queries[f"q{i}"] = " ".join(topic[:3])
            qrels.append(f"q{i}\td{i}\t1")
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs.values()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    return root


def load_script(name: str):
    """A module of scripts/ (not a package) loaded from its file, e.g. ``load_script("bench_speed")``."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
