"""`rerankforge clicks sweep` end to end on a tiny collection with a tiny model (seconds), and the
simulator's logging rankers and examination curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankforge.cli import main
from test_clicks_experiment import tiny_collection  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_sweep_end_to_end(tiny_collection, tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "sweep"
    rc = main(["clicks", "sweep", "--config", str(ROOT / "configs" / "clicks_severe.yaml"),
               f"output_dir={out}", f"collection={tiny_collection}", "max_train_queries=null",
               "simulation.impressions=1500", "simulation.top_k=10", "heldout_impressions=300",
               "train.model.type=cross_encoder", f"train.model.name_or_path={tiny_bert_dir}", "train.model.params={}",
               "train.model.max_length=32", "train.bf16=false", "eval.depth=10", "eval.n_resamples=200"])
    assert rc == 0
    report = json.loads((out / "sweep_report.json").read_text())
    assert list(report) == ["settings"] and len(report["settings"]) == 1
    row = report["settings"][0]
    assert row["name"] == "severe"
    assert set(row) == {"name", "naive", "ipw", "two_tower", "dla"}
    assert 0.0 <= row["naive"]["nDCG@10"] <= 1.0 and "p_vs_naive" not in row["naive"]
    for method in ("ipw", "two_tower", "dla"):
        r = row[method]
        assert 0.0 <= r["nDCG@10"] <= 1.0 and 0.0 < r["p_vs_naive"] <= 1.0
        lo, hi = r["ci_vs_naive"]
        assert lo <= r["delta_vs_naive"] <= hi
        assert r["click_loglik"] < 0 and r["click_perplexity"] >= 1.0
        assert r["propensity_max_rel_error@10"] >= 0
    assert row["naive"]["click_loglik"] < 0
    details = json.loads((out / "sweep_details.json").read_text())
    sd = details["settings"]["severe"]
    assert sd["simulation"]["logger"] == "degraded" and len(sd["true_propensity"]) == 10
    assert len(sd["methods"]["two_tower"]["propensity"]) == 10
    table = (out / "sweep_report.md").read_text()
    assert "| severe | dla |" in table and "Δ vs naive" in table
    assert (out / "sweep_delta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("clicks.jsonl.gz", "heldout.jsonl.gz", "propensities.json", "groups_naive.jsonl",
                 "two_tower/model/rerankforge.json", "dla/train_summary.json"):
        assert (out / "severe" / name).exists(), name
    group = json.loads((out / "severe" / "groups_naive.jsonl").read_text().splitlines()[0])
    assert {"views", "clicks"} <= set(group["candidates"][0])
    assert "sweep_report.json" in capsys.readouterr().out


def test_sweep_config_errors(tmp_path):
    from rerankforge.errors import ConfigError
    from rerankforge.pipelines.clicks_sweep import load_sweep_config

    cfg = ROOT / "configs" / "clicks_sweep.yaml"
    loaded = load_sweep_config(cfg)
    assert [s.name for s in loaded.settings][:2] == ["yandex", "eta1"]
    with pytest.raises(ConfigError, match="naive"):
        load_sweep_config(cfg, ["methods=[ipw]"])
    with pytest.raises(ConfigError, match="unknown method"):
        load_sweep_config(cfg, ["methods=[naive,em]"])
    with pytest.raises(ConfigError, match="eval.split"):
        load_sweep_config(cfg, ["train_split=test"])
    with pytest.raises(ConfigError, match="logger"):
        load_sweep_config(cfg, ["simulation.logger=oracle"])


def test_logging_rankers_and_curves(tmp_path):
    from rerankforge.clicks.propensity import Propensities
    from rerankforge.clicks.simulate import SimulationConfig, examination_curve, logging_run, simulate_clicks
    from rerankforge.errors import ConfigError

    run = {f"q{i}": [(f"d{i}-{j}", 100.0 - j) for j in range(30)] for i in range(5)}
    qrels = {q: {docs[0][0]: 1, docs[12][0]: 2} for q, docs in run.items()}
    # degraded: a fixed noisy re-sort of the pool, the same whatever the click seed
    cfg = SimulationConfig(top_k=10, logger="degraded", logger_noise=2.0, logger_pool=30, impressions=50)
    shown = logging_run(run, cfg)
    assert all(len(v) == 10 for v in shown.values())
    assert shown != {q: d[:10] for q, d in run.items()}
    imps_a = simulate_clicks(run, qrels, cfg)
    imps_b = simulate_clicks(run, qrels, SimulationConfig(**{**cfg.__dict__, "seed": 7}))
    first = {i.query_id: set(i.shown) for i in imps_a}
    assert all(set(i.shown) == first[i.query_id] for i in imps_b if i.query_id in first)
    # random top-k: every impression in a fresh order of the same documents
    rnd = simulate_clicks(run, qrels, SimulationConfig(top_k=10, logger="random_topk", impressions=40))
    assert len({tuple(i.shown) for i in rnd}) > 30
    assert all(set(i.shown) == {d for d, _ in run[i.query_id][:10]} for i in rnd)
    # curves: any eta, or a propensity file that must reach top_k
    assert examination_curve(SimulationConfig(top_k=3, eta=0.5)) == pytest.approx([1.0, 2 ** -0.5, 3 ** -0.5])
    path = tmp_path / "p.json"
    Propensities([1.0, 0.5, 0.25]).save(path)
    assert examination_curve(SimulationConfig(top_k=3, propensity_file=str(path))) == [1.0, 0.5, 0.25]
    with pytest.raises(ConfigError, match="covers ranks 1-3"):
        examination_curve(SimulationConfig(top_k=5, propensity_file=str(path)))
