"""ColBERT exports are PyLate / sentence-transformers multi-vector models with the trained projection:
identical MaxSim scores in rerankforge, sentence-transformers' MultiVectorEncoder and PyLate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rerankforge.models.colbert import ColBERT

QUERIES = ["protein receptor signal?", "what is the tumour growth pathway", "vaccine, immune dose!"]
DOCS = ["receptor protein signal pathway in mouse cells.", "immune response (to the vaccine) after a second dose",
        "a trial of insulin dose in obese humans; and a very long document with many words " * 3]


def trained_like(tiny_bert_dir, **options) -> ColBERT:
    torch.manual_seed(0)
    model = ColBERT.from_base(str(tiny_bert_dir), dim=16, query_length=12, max_length=24, **options)
    with torch.no_grad():  # a projection no fresh initialisation would reproduce
        model.projection.weight.normal_(0.0, 1.0)
    return model


def rerankforge_scores(model) -> np.ndarray:
    pq = [q for q in QUERIES for _ in DOCS]
    pd = [d for _ in QUERIES for d in DOCS]
    return model.score_pairs(pq, pd, bf16=False).reshape(len(QUERIES), len(DOCS))


def test_export_writes_the_multivector_layout(tmp_path, tiny_bert_dir):
    model = trained_like(tiny_bert_dir)
    model.save_pretrained(tmp_path / "m")
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    assert [(m["path"], m["type"]) for m in modules] == [("", "sentence_transformers.models.Transformer"),
                                                         ("1_Dense", "sentence_transformers.models.Dense")]
    from safetensors.torch import load_file

    dense = load_file(str(tmp_path / "m" / "1_Dense" / "model.safetensors"))["linear.weight"]
    assert torch.equal(dense, model.projection.weight.detach())
    cfg = json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())
    assert cfg["model_type"] == "ColBERT" and cfg["query_prefix"] == "[unused0]" and cfg["document_prefix"] == "[unused1]"
    assert (cfg["query_length"], cfg["document_length"], cfg["do_query_expansion"]) == (12, 24, True)
    assert "." in cfg["skiplist_words"] and "?" in cfg["skiplist_words"]
    # rerankforge still loads it as its own ColBERT, scores unchanged
    from rerankforge.models import load_reranker

    assert np.allclose(rerankforge_scores(load_reranker(tmp_path / "m")), rerankforge_scores(model), atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"query_augmentation": False, "mask_punctuation": False},
                                     {"attend_to_mask_tokens": True}], ids=["default", "no-expansion", "attend-mask"])
def test_sentence_transformers_multivector_scores_match(tmp_path, tiny_bert_dir, options):
    st = pytest.importorskip("sentence_transformers")
    if not hasattr(st, "MultiVectorEncoder"):
        pytest.skip("this sentence-transformers has no MultiVectorEncoder (added in 6.x)")
    model = trained_like(tiny_bert_dir, **options)
    model.save_pretrained(tmp_path / "m")
    mve = st.MultiVectorEncoder(str(tmp_path / "m"), device="cpu")
    got = mve.similarity(mve.encode_query(QUERIES), mve.encode_document(DOCS)).numpy()
    want = rerankforge_scores(model)
    assert np.abs(got - want).max() <= 1e-5, (got, want)
    assert (np.argsort(-got, axis=1) == np.argsort(-want, axis=1)).all()


def test_without_the_layout_the_projection_is_lost(tmp_path, tiny_bert_dir):
    """What exports did before: the encoder alone loads with a fresh random projection."""
    st = pytest.importorskip("sentence_transformers")
    if not hasattr(st, "MultiVectorEncoder"):
        pytest.skip("no MultiVectorEncoder")
    model = trained_like(tiny_bert_dir)
    model.save_pretrained(tmp_path / "m")
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (tmp_path / "m" / name).unlink()
    mve = st.MultiVectorEncoder(str(tmp_path / "m"), device="cpu")
    got = mve.similarity(mve.encode_query(QUERIES), mve.encode_document(DOCS)).numpy()
    assert np.abs(got - rerankforge_scores(model)).max() > 1e-2


PYLATE_SCRIPT = r"""
import json, sys, types
for name in ("fast_plaid", "fast_plaid.search", "fastkmeans"):  # index backends; encoding does not use them
    sys.modules.setdefault(name, types.ModuleType(name))
import pylate
from pylate import models
m = models.ColBERT(sys.argv[1], device="cpu")
qs, ds = json.loads(sys.argv[2]), json.loads(sys.argv[3])
qe = m.encode(qs, is_query=True, convert_to_numpy=True)
de = m.encode(ds, is_query=False, convert_to_numpy=True)
print(json.dumps({"version": pylate.__version__,
                  "scores": [[float((q @ d.T).max(axis=1).sum()) for d in de] for q in qe]}))
"""


def test_pylate_scores_match(tmp_path, tiny_bert_dir):
    """PyLate pins older sentence-transformers/transformers, so it never shares the project's
    environment: it runs in a subprocess, from ``$RERANKFORGE_PYLATE_PATH`` (a ``pip install
    --no-deps --target DIR pylate sentence-transformers==5.3.0 transformers==5.3.0 ...`` directory,
    see README) or an installed pylate; skipped when neither is there."""
    env = dict(os.environ)
    extra = os.environ.get("RERANKFORGE_PYLATE_PATH")
    if extra:
        env["PYTHONPATH"] = os.pathsep.join([extra, env.get("PYTHONPATH", "")])
    else:
        import importlib.util

        if importlib.util.find_spec("pylate") is None:
            pytest.skip("PyLate not installed (set RERANKFORGE_PYLATE_PATH to a --target install of it)")
    model = trained_like(tiny_bert_dir)
    model.save_pretrained(tmp_path / "m")
    proc = subprocess.run([sys.executable, "-c", PYLATE_SCRIPT, str(tmp_path / "m"), json.dumps(QUERIES),
                           json.dumps(DOCS)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1])["scores"])
    assert np.abs(got - rerankforge_scores(model)).max() <= 1e-5
