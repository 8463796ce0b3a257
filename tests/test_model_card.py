"""Model cards from training (Hub front matter with model-index, the reproducing command) and push_to_hub."""

import json

import pytest
import yaml

from helpers import write_tiny_groups
from rerankforge.config import load_config
from rerankforge.export.card import metric_id, write_model_card
from rerankforge.train import TrainConfig


def test_metric_ids():
    assert [metric_id(m) for m in ("nDCG@10", "RR@10", "R@100", "AP@100", "P@5")] == [
        "ndcg_at_10", "mrr_at_10", "recall_at_100", "map_at_100", "precision_at_5"]


def test_card_front_matter_is_valid_hub_metadata(tmp_path):
    from huggingface_hub import ModelCard

    from test_onnx import fake_training_output

    out = fake_training_output(tmp_path / "run")
    card = ModelCard.load(write_model_card(out / "model", out))
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and data.license == "apache-2.0"
    assert data.datasets == ["BeIR/scifact"] and data.library_name == "sentence-transformers"
    assert data.pipeline_tag == "text-ranking" and "reranker" in data.tags
    by_metric = {r.metric_name: r for r in data.eval_results}
    assert by_metric["nDCG@10"].metric_value == 0.7012 and by_metric["nDCG@10"].metric_type == "ndcg_at_10"
    assert by_metric["RR@10"].dataset_type == "BeIR/scifact" and by_metric["RR@10"].dataset_split == "test"


def test_train_writes_card_with_measured_metrics_and_command(tmp_path, tiny_bert_dir, tiny_collection):
    from rerankforge.pipelines.steps import train_recipe

    coll, _ = tiny_collection
    groups = write_tiny_groups(tmp_path / "g.jsonl", n=4, size=4)
    cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path / 'run'}", f"model.name_or_path={tiny_bert_dir}",
                                          "model.max_length=32", f"data.train_groups={groups}", "optim.max_steps=2",
                                          "bf16=false", "progress=false", f"eval.collection={coll}", "eval.depth=6",
                                          "card.tags=[tiny]", "card.license=mit", "card.model_name=tiny-ce"])
    result = train_recipe(cfg)
    text = (tmp_path / "run" / "model" / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    ndcg = result["eval"]["reranked"]["nDCG@10"]
    assert front["license"] == "mit" and "tiny" in front["tags"] and "base_model" not in front  # a local dir
    (entry,) = front["model-index"]
    assert entry["name"] == "tiny-ce"
    metrics = {m["name"]: m["value"] for m in entry["results"][0]["metrics"]}
    assert metrics["nDCG@10"] == round(ndcg, 4)
    assert "rerankforge train" in text and "optim.max_steps=2" in text and "card.license=mit" in text
    assert json.loads((tmp_path / "run" / "model" / "model_card.json").read_text())["evaluation"]["reranked"][
        "nDCG@10"] == ndcg


def test_push_to_hub_uploads_the_model_dir(tmp_path, monkeypatch, tiny_bert_dir):
    import huggingface_hub

    from rerankforge.export.hub import maybe_push
    from rerankforge.export.card import CardConfig

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw["repo_id"], kw))
            assert (tmp_path / "m" / "README.md").exists()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "README.md").write_text("---\nlicense: mit\n---\n")
    assert maybe_push(tmp_path / "m", CardConfig()) is None and not calls
    url = maybe_push(tmp_path / "m", CardConfig(push_to_hub=True, hub_model_id="org/tiny", private=False))
    assert url == "https://hub.example/org/tiny"
    assert [c[:2] for c in calls] == [("create_repo", "org/tiny"), ("upload_folder", "org/tiny")]
    assert calls[0][2] == {"private": False, "repo_type": "model", "exist_ok": True}
    assert calls[1][2]["folder_path"] == str(tmp_path / "m")


def test_push_to_hub_needs_a_repo_id():
    from rerankforge.errors import ConfigError

    with pytest.raises(ConfigError, match="hub_model_id"):
        load_config(TrainConfig, None, ["card.push_to_hub=true"])


def test_trainer_with_a_given_model_describes_that_model(tmp_path, tiny_bert_dir):
    from rerankforge.models.cross_encoder import CrossEncoder
    from rerankforge.train import Trainer

    groups = write_tiny_groups(tmp_path / "g.jsonl", n=2, size=3)
    model_dir = Trainer(model=CrossEncoder.from_base(str(tiny_bert_dir), max_length=32), train_data=str(groups),
                        args={"output_dir": str(tmp_path / "run"), "bf16": False, "progress": False,
                              "optim": {"max_steps": 1}}).train()
    info = json.loads((model_dir / "model_card.json").read_text())
    assert info["base_model"] == str(tiny_bert_dir) and info["base_model_id"] is None  # not config's "default"
    assert "base_model" not in yaml.safe_load((model_dir / "README.md").read_text().split("---")[1])
