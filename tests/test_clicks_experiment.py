"""`rerankforge clicks ...` commands and the naive-vs-IPW experiment (tiny version unmarked,
the NFCorpus propensity recovery marked slow)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rerankforge.cli import main

WORDS = ("protein gene cell cancer virus immune brain heart blood drug trial dose risk mouse human signal "
         "receptor pathway growth tumour infection vaccine diabetes obesity insulin liver kidney lung bone "
         "skin diet fat sugar salt fibre vitamin iron zinc sleep stress exercise").split()


@pytest.fixture(scope="module")
def tiny_collection(tmp_path_factory) -> Path:
    """120 documents, 24 train and 8 test queries; relevant documents share the query's words."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("clicks-collection")
    (root / "qrels").mkdir()
    docs, queries, qrels = {}, {}, {"train": [], "test": []}
    for d in range(120):
        docs[f"D{d}"] = " ".join(rng.sample(WORDS, 8))
    for q in range(32):
        words = rng.sample(WORDS, 3)
        queries[f"Q{q}"] = " ".join(words)
        split = "train" if q < 24 else "test"
        for d in rng.sample(sorted(docs), 4):
            docs[d] += " " + " ".join(words)
            qrels[split].append((f"Q{q}", d, rng.choice([1, 2])))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for d, t in docs.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    for split, rows in qrels.items():
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))
    return root


def test_simulate_estimate_groups_commands(tiny_collection, tmp_path, capsys):
    log = tmp_path / "clicks.jsonl.gz"
    assert main(["clicks", "simulate", "--collection", str(tiny_collection), "--split", "train", "--out", str(log),
                 "--impressions", "3000", "--perturb-prob", "0.5", "--seed", "3"]) == 0
    truth = json.loads((tmp_path / "clicks.sim.json").read_text())
    assert truth["true_propensity"][:3] == pytest.approx([1.0, 0.5, 1 / 3])

    out = tmp_path / "prop.json"
    assert main(["clicks", "estimate", "--log", str(log), "--out", str(out), "--bootstrap", "3",
                 "--test-log", str(log)]) == 0
    text = capsys.readouterr().out
    assert "propensity" in text and "held-out click perplexity" in text
    prop = json.loads(out.read_text())
    assert prop["schema"] == "rerankforge.propensities/1"
    assert prop["propensity"][0] == 1.0 and len(prop["propensity"]) == 10
    assert prop["propensity"][1] > prop["propensity"][9]
    assert len(prop["ci_low"]) == 10 and prop["bootstrap"]["unit"] == "query"
    assert prop["impressions"] == 3000
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    groups = tmp_path / "groups.jsonl"
    assert main(["clicks", "groups", "--log", str(log), "--collection", str(tiny_collection), "--propensities",
                 str(out), "--method", "ipw", "--out", str(groups)]) == 0
    rows = [json.loads(line) for line in groups.read_text().splitlines()]
    assert rows and all(r["schema"] == "rerankforge.group/1" for r in rows)
    cand = rows[0]["candidates"][0]
    assert {"doc_id", "text", "label", "propensity", "weight", "rank"} <= set(cand)
    assert "groups" in capsys.readouterr().out

    # errors the user can act on: exit 2 with the reason
    assert main(["clicks", "groups", "--log", str(log), "--collection", str(tiny_collection), "--method", "ipw",
                 "--out", str(groups)]) == 2
    assert "needs propensities" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query_id": "Q1", "shown": ["D1"], "clicks": ["D9"]}\n')
    assert main(["clicks", "estimate", "--log", str(bad), "--out", str(tmp_path / "x.json"), "--strict"]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_tiny_experiment_end_to_end(tiny_collection, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "exp"
    config = Path(__file__).resolve().parents[1] / "configs" / "clicks_nfcorpus.yaml"
    rc = main(["clicks", "experiment", "--config", str(config),
               f"output_dir={out}", f"collection={tiny_collection}",
               "simulation.impressions=1500", "simulation.perturb_prob=0.5", "estimation.bootstrap=2",
               f"train.model.name_or_path={tiny_bert_dir}", "train.model.max_length=32", "train.data.max_groups=8",
               "train.optim.batch_size=4", "train.bf16=false", "train.progress=false", "eval.depth=10"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "naive" in text and "ipw" in text and "IPW - naive" in text
    report = json.loads((out / "clicks_report.json").read_text())
    assert set(report) >= {"bm25", "naive", "ipw", "propensity"}
    assert len(report["propensity"]["true"]) == 10 and len(report["propensity"]["estimated"]) == 10
    for arm in ("bm25", "naive", "ipw"):
        assert 0.0 <= report[arm]["nDCG@10"] <= 1.0
    assert report["details"]["arms"]["ipw"]["labels"]["groups"] > 0
    for name in ("clicks.jsonl.gz", "propensities.json", "propensities.png", "groups_naive.jsonl", "groups_ipw.jsonl",
                 "naive/model/rerankforge.json", "ipw/test_reranked.trec"):
        assert (out / name).exists(), name
    # the starting model is evaluated too, and compared with each arm
    assert 0.0 <= report["init"]["nDCG@10"] <= 1.0
    assert report["details"]["ipw_vs_init_ndcg@10"]["queries"] == report["details"]["test_queries"]
    # the two arms train on the same queries and candidates and differ only in the click labels
    naive = [json.loads(line) for line in (out / "groups_naive.jsonl").read_text().splitlines()]
    ipw = [json.loads(line) for line in (out / "groups_ipw.jsonl").read_text().splitlines()]
    assert [g["query_id"] for g in naive] == [g["query_id"] for g in ipw]
    pairs = [(a, b) for g, h in zip(naive, ipw) for a, b in zip(g["candidates"], h["candidates"])]
    assert all(a["doc_id"] == b["doc_id"] for a, b in pairs)
    assert any((a["label"], a["weight"]) != (b["label"], b["weight"]) for a, b in pairs)


def test_experiment_config_errors_name_the_key(tmp_path):
    from rerankforge.pipelines.clicks_experiment import load_experiment_config
    from rerankforge.errors import ConfigError

    config = Path(__file__).resolve().parents[1] / "configs" / "clicks_nfcorpus.yaml"
    with pytest.raises(ConfigError, match="perturb"):
        load_experiment_config(config, ["simulation.perturb=sometimes"])
    with pytest.raises(ConfigError, match="train section"):
        load_experiment_config(config, ["train.optim.nonsense=1"])
    with pytest.raises(ConfigError, match="arms"):
        load_experiment_config(config, ["arms=[naive,oracle]"])


@pytest.mark.slow
def test_em_recovers_nfcorpus_simulation_propensities(shared_datasets):
    """The issue's target on the experiment's own setting: 50k impressions of BM25 top-10 over
    NFCorpus train queries, PBM eta=1, eps-=0.1; EM within 10% at ranks 1-10."""
    from rerankforge.clicks import SimulationConfig, build_observations, fit_pbm, simulate_clicks, true_propensities
    from rerankforge.data.beir import Collection
    from rerankforge.retrieve import build_retriever

    collection = Collection(shared_datasets / "nfcorpus")
    retriever = build_retriever("bm25")
    retriever.index(collection.corpus)
    run = retriever.search(collection.split_queries("train"), 10)
    imps = simulate_clicks(run, collection.qrels("train"), SimulationConfig(impressions=50_000, seed=13))
    prop = fit_pbm(build_observations(imps)).propensity
    assert np.max(np.abs(prop / np.array(true_propensities(10, 1.0)) - 1)) < 0.10
