"""One registry for every extension point; a config may name classes outside the package."""

import json
import sys
import textwrap

import pytest

from rerankforge.cli import main
from rerankforge.errors import ConfigError
from rerankforge.losses import LOSSES, RankingLoss, build_loss
from rerankforge.models import MODELS, load_reranker
from rerankforge.retrieve import RETRIEVERS, build_retriever
from rerankforge.labels.config import LABEL_JOBS

OUTSIDE = textwrap.dedent('''
    import torch
    from rerankforge.losses import RankingLoss
    from rerankforge.losses.listwise_ce import ListwiseSoftmaxCE
    from rerankforge.models.cross_encoder import CrossEncoder

    CALLS = []

    class HalfListwise(RankingLoss):
        """Half of the listwise softmax CE: a loss the package does not ship."""
        target = "labels"

        def __init__(self, factor: float = 0.5):
            super().__init__()
            self.factor, self.inner = factor, ListwiseSoftmaxCE()

        def forward(self, scores, targets, mask, weights=None):
            if scores.requires_grad:  # the training step's call (the collapse guard re-scores detached)
                CALLS.append(scores.shape)
            return self.factor * self.inner(scores, targets, mask, weights)

    class TinyReranker(CrossEncoder):
        """A model type the package does not ship (it records its own import path)."""
        model_type = ""
''')


@pytest.fixture
def outside_module(tmp_path, monkeypatch):
    (tmp_path / "outside_ext.py").write_text(OUTSIDE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "outside_ext"
    sys.modules.pop("outside_ext", None)
    for registry in (LOSSES, MODELS):  # resolved paths are cached: forget this test's module
        for key in [k for k in registry._items if k.startswith("outside_ext:")]:
            del registry._items[key]


def test_every_extension_point_uses_the_registry():
    assert {"listwise_ce", "kl", "margin_mse", "bce"} <= set(LOSSES)
    assert {"cross_encoder", "colbert", "decoder"} <= set(MODELS)
    assert {"bm25", "dense", "hybrid"} <= set(RETRIEVERS)
    assert {"graded", "teacher", "llm", "llm-api"} <= set(LABEL_JOBS)
    for registry, bad in ((LOSSES, "nope"), (MODELS, "nope"), (RETRIEVERS, "nope")):
        with pytest.raises(ConfigError, match="available: .*module:Class"):
            registry.get(bad)
    assert type(build_retriever("bm25", k1=1.2)).__name__ == "BM25Retriever"
    with pytest.raises(ConfigError, match="unknown parameter.*k9"):
        build_retriever("bm25", k9=1)


def test_module_paths_are_checked(outside_module):
    assert issubclass(LOSSES.get(f"{outside_module}:HalfListwise"), RankingLoss)
    with pytest.raises(ConfigError, match="not a subclass of RankingLoss"):
        LOSSES.get(f"{outside_module}:TinyReranker")
    with pytest.raises(ConfigError, match="cannot import module"):
        LOSSES.get("no_such_module_xyz:Thing")
    with pytest.raises(ConfigError, match="has no attribute"):
        LOSSES.get(f"{outside_module}:Missing")
    loss = build_loss([{"name": f"{outside_module}:HalfListwise", "factor": 0.25}])
    assert loss.part_names == [f"{outside_module}:HalfListwise"] and loss.terms[0].factor == 0.25


def test_train_with_an_outside_loss_and_an_outside_model(outside_module, tmp_path, tiny_bert_dir):
    from helpers import write_tiny_groups

    groups = write_tiny_groups(tmp_path / "groups.jsonl", n=6, size=4)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
output_dir: {tmp_path / "run"}
bf16: false
progress: false
log_every: 1
model: {{type: "{outside_module}:TinyReranker", name_or_path: {tiny_bert_dir}, max_length: 32}}
data: {{train_groups: {groups}, group_size: 4}}
loss: [{{name: "{outside_module}:HalfListwise", factor: 0.5}}]
optim: {{max_steps: 3, batch_size: 2}}
""")
    assert main(["train", "--config", str(cfg)]) == 0
    module = sys.modules[outside_module]
    assert len(module.CALLS) == 3 and module.CALLS[0] == (2, 4)  # the outside loss saw every step's [B, G]
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["history"]
    assert all(f"loss/{outside_module}:HalfListwise" in h for h in history)
    meta = json.loads((tmp_path / "run" / "model" / "rerankforge.json").read_text())
    assert meta["model_type"] == f"{outside_module}:TinyReranker"
    reloaded = load_reranker(tmp_path / "run" / "model")
    assert type(reloaded).__name__ == "TinyReranker" and reloaded.predict([("q", "d")]).shape == (1,)
