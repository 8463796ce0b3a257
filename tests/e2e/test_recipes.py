"""Every shipped config runs from a fresh clone with its own verb alone: here on a small slice
(tiny models, a few queries, two steps) of the bundled SciFact, end to end through the CLI."""

import json
from pathlib import Path

import pytest

from rerankforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def verb_of(path: Path) -> str:
    if path.name.startswith("adapt"):
        return "adapt"
    if path.name.startswith("distill_"):
        return "distill"
    if path.name.startswith("clicks_"):
        return "clicks sweep" if "\nsettings:" in path.read_text() else "clicks experiment"
    return "train"


def small_slice(path: Path, out: Path, tiny_bert: Path, tiny_llama: Path, teacher: Path) -> list[str]:
    """Overrides that keep the recipe's pipeline whole but make it take seconds."""
    verb = verb_of(path)
    text = path.read_text()
    if verb == "train":
        model = tiny_llama if "type: decoder" in text else tiny_bert
        extra = [f"data.teacher={teacher}"] if "teacher:" in text else []
        if "../shared/datasets" in text:  # a collection outside the repository: the bundled one here
            extra += ["data.mine.collection=bundled:scifact", "eval.collection=bundled:scifact"]
            if "split: dev" in text:  # the bundled SciFact has no dev split: a few train queries stand in
                extra += ["dev.split=train", "dev.max_queries=2", "dev.depth=4"]
        if "holdout: true" in text:
            extra += ["data.mine.holdout_queries=2", "dev.max_queries=2", "dev.depth=4"]
        if "pseudo:" in text:
            extra += ["data.mine.pseudo.titles=3", "data.mine.pseudo.sentences=3"]
        return [f"output_dir={out}", f"model.name_or_path={model}", "model.max_length=64", "optim.max_steps=2",
                "data.mine.max_queries=6", "eval.max_queries=2", "eval.depth=4", "progress=false", *extra]
    if verb == "distill":
        return [f"output_dir={out}", f"teacher={teacher}", "mine.max_queries=6", "mine.pseudo.titles=3",
                "mine.pseudo.sentences=3", "student.layers=[0,1]", "train.optim.max_steps=2",
                "train.optim.max_minutes=null", "train.data.num_workers=0", "eval.max_queries=2", "eval.depth=4",
                "progress=false"]
    if verb == "adapt":
        from helpers import write_adapt_collection

        coll = write_adapt_collection(out.parent / "coll")
        return ["--collection", str(coll), "--out", str(out), "--minutes", "1", "--no-progress",
                "--pseudo-queries", "24", "--dev-queries", "8", f"train.model.name_or_path={tiny_bert}",
                "train.model.max_length=48", "train.optim.max_steps=2", "train.optim.batch_size=4",
                "train.data.group_size=4", "pseudo.span_min_words=3", "pseudo.span_max_words=5",
                f"dense_model={tiny_bert}", "pseudo.min_doc_words=3", "negatives.negatives=4", "depth=20"]
    if verb == "clicks sweep":
        return [f"output_dir={out}", "collection=bundled:scifact", "max_train_queries=12",
                "simulation.impressions=300", "simulation.top_k=10", "heldout_impressions=100",
                "settings=[{name: s, simulation: {eta: 2.0, top_k: 10}}]", "train.model.type=cross_encoder",
                f"train.model.name_or_path={tiny_bert}", "train.model.params={}", "train.model.max_length=64",
                "train.optim.max_steps=2", "eval.max_queries=2", "eval.depth=4", "eval.n_resamples=50"]
    return [f"output_dir={out}", "collection=bundled:scifact", "max_train_queries=12", "simulation.impressions=120",
            "estimation.bootstrap=0", f"train.model.name_or_path={tiny_bert}", "train.model.max_length=64",
            "train.optim.max_steps=2", "train.progress=false", "eval.max_queries=2", "eval.depth=4"]


def test_every_config_is_covered():
    assert len(CONFIGS) >= 10 and {verb_of(p) for p in CONFIGS} == {"train", "distill", "clicks experiment", "clicks sweep",
                                                                "adapt"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_runs_on_a_small_slice(path, tmp_path, tiny_bert_dir, tiny_llama_dir,
                                              tiny_ce_dir):
    out = tmp_path / "run"
    overrides = small_slice(path, out, tiny_bert_dir, tiny_llama_dir, tiny_ce_dir)
    verb = verb_of(path).split()
    assert main([*verb, "--config", str(path), *overrides]) == 0
    if verb == ["train"]:
        assert (out / "model" / "rerankforge.json").exists() and (out / "config.yaml").exists()
        report = json.loads((out / "eval.json").read_text())
        assert report["queries"] == 2 and 0.0 <= report["reranked"]["nDCG@10"] <= 1.0
        assert json.loads((out / "train_summary.json").read_text())["global_step"] == 2
    elif verb == ["distill"]:
        report = json.loads((out / "distill_report.json").read_text())
        assert report["train"]["global_step"] == 2 and report["setup"]["queries"] == 2
    elif verb == ["adapt"]:
        report = json.loads((out / "adapt_report.json").read_text())
        assert {"first_stage", "pure", "output", "fusion"} <= set(report) and (out / "model").is_dir()
    elif verb == ["clicks", "sweep"]:
        report = json.loads((out / "sweep_report.json").read_text())
        assert [s["name"] for s in report["settings"]] == ["s"]
        import yaml

        methods = yaml.safe_load(path.read_text())["methods"]
        assert "naive" in methods and set(methods) <= set(report["settings"][0])  # every method, vs naive
    else:
        report = json.loads((out / "clicks_report.json").read_text())
        assert set(report) >= {"bm25", "naive", "ipw", "propensity"}
