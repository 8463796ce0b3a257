"""The Python API: predict / rank on every reranker, Trainer over objects, groups in every form."""

import numpy as np
import pytest
import torch

import rerankforge
from rerankforge import ColBERT, CrossEncoder, Trainer, TrainConfig, load_reranker
from rerankforge.data.hf import groups_to_dataset
from rerankforge.errors import ConfigError

from helpers import make_groups


@pytest.fixture(params=["cross_encoder", "colbert"])
def model(request, tiny_bert_dir):
    torch.manual_seed(0)
    if request.param == "colbert":
        return ColBERT(str(tiny_bert_dir), max_length=32, dim=16)
    return CrossEncoder(str(tiny_bert_dir), max_length=32)


def test_predict_and_rank_agree_with_score_pairs(model):
    docs = ["cats purr softly", "dogs bark loudly at night", "a cat and a dog"]
    scores = model.predict([("cat", d) for d in docs])
    assert isinstance(scores, np.ndarray) and scores.shape == (3,)
    np.testing.assert_allclose(scores, model.score_pairs(["cat"] * 3, docs), rtol=1e-6)
    assert model.predict(("cat", docs[0])).shape == (1,)
    ranked = model.rank("cat", docs, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores, kind="stable"))
    assert ranked[0]["text"] == docs[ranked[0]["corpus_id"]] and ranked[0]["score"] == pytest.approx(scores.max())
    top = model.rank("cat", {"a": docs[0], "b": docs[1], "c": docs[2]}, top_k=2)
    assert len(top) == 2 and {r["corpus_id"] for r in top} <= {"a", "b", "c"} and "text" not in top[0]
    with pytest.raises(TypeError, match="pairs of strings"):
        model.predict([("only one",)])


def test_constructors_accept_paths_and_refuse_other_types(tmp_path, tiny_bert_dir):
    ce = CrossEncoder(str(tiny_bert_dir), max_length=40)
    ce.save_pretrained(tmp_path / "ce")
    again = CrossEncoder(str(tmp_path / "ce"))
    assert again.max_length == 40 and type(load_reranker(tmp_path / "ce")) is CrossEncoder
    colbert = ColBERT(str(tiny_bert_dir), dim=8, max_length=24)
    colbert.save_pretrained(tmp_path / "cb")
    with pytest.raises(ConfigError, match="holds a colbert model"):
        CrossEncoder(str(tmp_path / "cb"))
    reloaded = ColBERT(str(tmp_path / "cb"))
    torch.testing.assert_close(reloaded.projection.weight, colbert.projection.weight)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CrossEncoder(str(tmp_path / "missing" / "model"))


@pytest.mark.parametrize("form", ["list", "jsonl", "dataset", "saved"])
def test_trainer_takes_model_loss_and_groups_in_every_form(form, tmp_path, tiny_bert_dir):
    from rerankforge.data.groups import write_groups
    from rerankforge.data.hf import save_groups_dataset
    from rerankforge.losses.listwise_ce import ListwiseSoftmaxCE

    groups = make_groups(n=6, size=4)
    data = {"list": lambda: groups,
            "jsonl": lambda: (write_groups(tmp_path / "g.jsonl", groups), tmp_path / "g.jsonl")[1],
            "dataset": lambda: groups_to_dataset(groups, cache_dir=tmp_path / "arrow"),
            "saved": lambda: (save_groups_dataset(groups, tmp_path / "ds"), tmp_path / "ds")[1]}[form]()
    model = CrossEncoder(str(tiny_bert_dir), max_length=32)
    before = model.predict([(groups[0].query, groups[0].candidates[0].text)])
    trainer = Trainer(model=model, loss=ListwiseSoftmaxCE(), train_data=data,
                      args={"output_dir": str(tmp_path / "run"), "bf16": False, "progress": False,
                            "data": {"group_size": 4}, "optim": {"max_steps": 2, "batch_size": 2, "lr": 1e-3}})
    out = trainer.train()
    assert (out / "config.json").exists() and trainer.model is model
    assert not np.allclose(before, model.predict([(groups[0].query, groups[0].candidates[0].text)]))


def test_trainer_errors_before_training(tmp_path):
    with pytest.raises(ConfigError, match="no training data"):
        Trainer(args=TrainConfig(output_dir=str(tmp_path))).train()
    with pytest.raises(ConfigError, match="unknown loss"):
        Trainer(loss="no_such_loss")


def test_mine_api_and_exports(tmp_path):
    groups = rerankforge.mine("bundled:scifact", "train", negatives=3, max_queries=5, rank_max=20)
    assert len(groups) == 5 and all(sum(1 for c in g.candidates if not c.label) == 3 for g in groups)
    with pytest.raises(ConfigError, match="unknown option 'negativez'"):
        rerankforge.mine("bundled:scifact", "train", negativez=3)
    assert {"CrossEncoder", "ColBERT", "load_reranker", "Trainer", "TrainConfig", "mine", "evaluate"} <= set(
        rerankforge.__all__)
    run = {g.query_id: [(c.doc_id, float(-i)) for i, c in enumerate(g.candidates)] for g in groups}
    metrics = rerankforge.evaluate(run, "bundled:scifact", "train")
    assert set(metrics) >= {"nDCG@10", "RR@10"}
