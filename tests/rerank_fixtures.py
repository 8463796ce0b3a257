"""Shared fixtures for the calibration / export / report / rerank-option tests: a tiny
cross-encoder with a usable spread of logits and a tiny BEIR collection with disjoint splits."""

import json
from pathlib import Path

import pytest
import torch

from helpers import make_groups

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


@pytest.fixture(scope="module")
def tiny_ce_dir(tmp_path_factory, tiny_bert_dir):
    from rerankforge.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_base(str(tiny_bert_dir), max_length=64)
    with torch.no_grad():
        # a freshly initialised tiny BERT gives nearly constant logits (std ~1e-5), which makes the
        # Platt fit ill-conditioned; wider random weights spread the logits over several units
        for p in model.model.bert.encoder.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        model.model.bert.pooler.dense.weight.normal_(0.0, 1.0)
        model.model.classifier.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("tiny-ce")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_collection(tmp_path_factory):
    return write_tiny_collection(tmp_path_factory.mktemp("coll") / "c")
