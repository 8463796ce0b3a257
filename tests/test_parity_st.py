"""scripts/parity_st.py on tiny models: both frameworks train on the same samples with the same
optimizer groups and are scored by the same code. Not a quality check (tiny random models)."""

from __future__ import annotations

import json

import pytest

from helpers import load_script, write_tiny_groups

pytest.importorskip("sentence_transformers.cross_encoder")


def recipe(tmp_path, tiny_bert_dir, collection) -> str:
    groups = write_tiny_groups(tmp_path / "groups.jsonl", n=6, size=5)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
output_dir: {tmp_path / 'unused'}
seed: 7
bf16: false
progress: false
model: {{type: cross_encoder, name_or_path: {tiny_bert_dir}, max_length: 32}}
data: {{train_groups: {groups}, group_size: 4, max_positives: 1}}
loss: [{{name: bce}}]
optim: {{lr: 1.0e-3, head_lr: 5.0e-3, epochs: 2, batch_size: 2, warmup_ratio: 0.1}}
eval: {{collection: {collection}, split: test, depth: 5}}
""")
    return str(path)


def test_same_samples_same_groups_one_scorer(tmp_path, tiny_bert_dir, tiny_collection):
    parity = load_script("parity_st")
    collection, _run = tiny_collection
    config = recipe(tmp_path, tiny_bert_dir, collection)
    out = tmp_path / "parity.json"
    result = parity.main(["--config", config, "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rf, st = result["rerankforge"], result["sentence_transformers"]
    # 6 groups x 4 candidates x 2 epochs, the same samples on both sides
    assert rf["pairs"] == st["pairs"] == 48
    # rerankforge: 3 batches of 2 groups per epoch; sentence-transformers: 48 rows in batches of 8 pairs
    assert rf["steps"] == 6 and st["steps"] == 6
    for r in (rf, st):
        assert 0.0 <= r["eval"]["reranked"]["nDCG@10"] <= 1.0 and r["pairs_per_s_wall"] > 0
    diff = result["rerankforge_minus_sentence_transformers"]
    assert diff["queries"] == rf["eval"]["queries"] > 0
    assert diff["delta"] == pytest.approx(rf["eval"]["reranked"]["nDCG@10"] - st["eval"]["reranked"]["nDCG@10"],
                                          abs=1e-9)
    assert result["recipe"]["sentence_transformers_loss"] == "BinaryCrossEntropyLoss"
    # evaluation only, from the models just trained: same figures
    again = parity.main(["--config", config, "--work-dir", str(tmp_path / "work"), "--out", str(out),
                         "--skip", "rerankforge", "--skip", "sentence_transformers"])
    assert again["rerankforge_minus_sentence_transformers"] == diff


def test_rows_are_the_trainers_batches_and_groups_match(tmp_path, tiny_bert_dir, tiny_collection):
    from rerankforge.config import load_config
    from rerankforge.train import TrainConfig
    from rerankforge.train.trainer import Trainer

    parity = load_script("parity_st")
    collection, _run = tiny_collection
    cfg = load_config(TrainConfig, recipe(tmp_path, tiny_bert_dir, collection), [])
    rows = parity.epoch_rows(cfg, "bce", max_label=1.0)
    trainer = Trainer(args=cfg)
    for epoch, epoch_rows in enumerate(rows):
        flat = [(i["query"], t, float(c.label > 0)) for b in trainer.training_batches(epoch) for i in b
                for t, c in zip(i["texts"], i["candidates"])]
        assert [(r["query"], r["document"], r["label"]) for r in epoch_rows] == flat
    assert rows[0] != rows[1]  # each epoch draws its own candidates / order

    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(str(tiny_bert_dir), num_labels=1, max_length=32)
    groups = parity.param_groups(model, cfg.optim)
    head = [g for g in groups if g["lr"] == 5.0e-3]
    assert head and all(p.shape[0] == 1 for g in head for p in g["params"])  # the new 1-logit head
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])
    assert {g["weight_decay"] for g in groups} == {0.0, cfg.optim.weight_decay}
