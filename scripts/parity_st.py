"""Same recipe, two frameworks: does a rerankforge-trained cross-encoder rank as well as one trained
by sentence-transformers' ``CrossEncoderTrainer``, and how long did each take?

Both start from the same weights and train on the same samples: the batches rerankforge's
``Trainer`` draws (``Trainer.training_batches``: the mined groups, each epoch's candidates and
order) are flattened into the ``(query, document, label)`` rows sentence-transformers trains on,
epoch after epoch. Both use the recipe's learning rates (the new head's ``head_lr`` too, through an
AdamW with the same parameter groups handed to ``CrossEncoderTrainer``), warm-up, schedule, weight
decay, gradient clipping, batch size in pairs, max length, precision and attention dropout. The
loss is ``bce`` vs ``BinaryCrossEntropyLoss`` (the same definition, tests/test_losses_st.py) or
``listnet`` vs ``ListNetLoss`` (sentence-transformers then sees each group as one row). What differs
is each framework's own machinery: rerankforge trains groups as they come and, on CPU, with its
fast dropout; sentence-transformers shuffles rows with its default batch sampler.

Both models are then scored by the same code (rerankforge's ``evaluate_reranker``, bf16) on the
recipe's eval split, first stage BM25 top-``depth``, and compared per query (paired randomisation
test and bootstrap CI on nDCG@10). Training is timed wall-clock, one run each, in this order
(rerankforge first), on whatever else the machine was doing: the throughput benchmark is
scripts/bench_speed.py; this script is about quality.

    python scripts/parity_st.py --config configs/scifact_bce.yaml optim.epochs=1 --out bench/parity_st.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ST_LOSSES = {"bce": "BinaryCrossEntropyLoss", "listnet": "ListNetLoss"}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a rerankforge cross-encoder training config")
    p.add_argument("overrides", nargs="*", help="dotted config overrides (optim.epochs=1 ...)")
    p.add_argument("--out", default="parity_st.json")
    p.add_argument("--work-dir", default=None, help="where both models are written (default: a temp dir)")
    p.add_argument("--eval-queries", type=int, default=None, help="first N judged queries of the eval split")
    p.add_argument("--skip", choices=("rerankforge", "sentence_transformers"), action="append", default=[],
                   help="reuse that framework's model from --work-dir instead of training it (repeatable)")
    return p.parse_args(argv)


def load_recipe(args):
    from rerankforge.config import load_config
    from rerankforge.train.config import TrainConfig

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if cfg.model.type != "cross_encoder":
        raise SystemExit(f"{args.config}: model.type must be cross_encoder, not {cfg.model.type}")
    terms = [dict(term) if isinstance(term, dict) else {"name": term} for term in cfg.loss]
    if len(terms) != 1 or terms[0]["name"] not in ST_LOSSES or set(terms[0]) - {"name", "weight", "max_label"}:
        raise SystemExit(f"{args.config}: the loss must be one of {sorted(ST_LOSSES)} with default options "
                         f"(sentence-transformers has the same definition), got {terms}")
    if cfg.optim.max_steps is not None or cfg.optim.grad_accum != 1:
        raise SystemExit("parity runs whole epochs without gradient accumulation: unset optim.max_steps, grad_accum")
    return cfg, terms[0]


def train_rerankforge(cfg, out_dir: Path) -> dict:
    from rerankforge.train.trainer import Trainer

    cfg = copy.deepcopy(cfg)
    cfg.output_dir = str(out_dir)
    cfg.eval.collection = None  # evaluated below, by the same code as the other model
    start = time.perf_counter()
    model_dir = Trainer(args=cfg).train()
    seconds = time.perf_counter() - start
    summary = json.loads((out_dir / "train_summary.json").read_text())
    return {"model": str(model_dir), "train_seconds": round(seconds, 1), "steps": summary["global_step"],
            "pairs": summary["pairs"], "loop_seconds": round(summary["train_seconds"], 1)}


def epoch_rows(cfg, loss: str, max_label: float = 1.0) -> list[list[dict]]:
    """Per epoch, the rows sentence-transformers trains on, from the batches rerankforge draws."""
    from rerankforge.train.trainer import Trainer

    trainer = Trainer(args=cfg)
    epochs = []
    for epoch in range(cfg.optim.epochs):
        rows = []
        for batch in trainer.training_batches(epoch):
            for item in batch:
                labels = [float(c.label or 0.0) for c in item["candidates"]]
                if loss == "bce":  # rerankforge's bce target: clip(label / max_label, 0, 1)
                    labels = [min(max(y / max_label, 0.0), 1.0) for y in labels]
                if loss == "listnet":
                    rows.append({"query": item["query"], "docs": item["texts"], "labels": labels})
                else:
                    rows += [{"query": item["query"], "document": t, "label": y} for t, y in zip(item["texts"], labels)]
        epochs.append(rows)
    return epochs


def param_groups(model, optim) -> list[dict]:
    """rerankforge's AdamW groups (train/build.py) for a sentence-transformers CrossEncoder."""
    from rerankforge.train.build import _no_decay

    head_lr = optim.head_lr if optim.head_lr is not None else optim.lr
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((".classifier." in f".{name}", _no_decay(name)), []).append(p)
    return [{"params": ps, "lr": head_lr if head else optim.lr, "weight_decay": 0.0 if nd else optim.weight_decay}
            for (head, nd), ps in groups.items()]


def train_sentence_transformers(cfg, term: dict, out_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder import losses as st_losses

    from rerankforge.models.base import resolve_model_path
    from rerankforge.models.dropout import set_attention_dropout

    loss = term["name"]
    rows = epoch_rows(cfg, loss, float(term.get("max_label", 1.0)))
    pairs_per_step = cfg.optim.batch_size * (cfg.data.group_size or 1)
    torch.manual_seed(cfg.seed)
    model = CrossEncoder(resolve_model_path(cfg.model.name_or_path), num_labels=1, max_length=cfg.model.max_length)
    if cfg.model.attention_dropout is not None:
        set_attention_dropout(model, cfg.model.attention_dropout)
    loss_fn = getattr(st_losses, ST_LOSSES[loss])(model)
    # one dataset holding every epoch's draw: ST's sampler shuffles within it; epochs = 1
    data = Dataset.from_list([r for epoch in rows for r in epoch])
    per_device = cfg.optim.batch_size if loss == "listnet" else pairs_per_step
    steps = -(-len(data) // per_device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim), lr=cfg.optim.lr)
    args = CrossEncoderTrainingArguments(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=1, per_device_train_batch_size=per_device,
        learning_rate=cfg.optim.lr, warmup_steps=round(cfg.optim.warmup_ratio * steps),
        lr_scheduler_type=cfg.optim.schedule, weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.max_grad_norm,
        bf16=cfg.bf16, seed=cfg.seed, save_strategy="no", report_to="none", logging_steps=max(1, steps // 20),
        use_cpu=not torch.cuda.is_available(), dataloader_drop_last=False)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss_fn,
                                  optimizers=(optimizer, None))
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    model_dir = out_dir / "model"
    model.save_pretrained(str(model_dir))
    pairs = sum(len(r["docs"]) for r in data) if loss == "listnet" else len(data)
    return {"model": str(model_dir), "train_seconds": round(seconds, 1), "steps": steps, "pairs": pairs,
            "loop_seconds": round(output.metrics["train_runtime"], 1)}


def evaluate(model_dir: str, cfg, max_queries: int | None) -> dict:
    from rerankforge.data.beir import Collection
    from rerankforge.eval.metrics import per_query
    from rerankforge.pipelines.steps import evaluate_reranker

    ev = cfg.eval
    coll = Collection.of(ev.collection)
    report = evaluate_reranker(model_dir, coll, ev.split, None, ev.depth, batch_size=64, bf16=True, progress=False,
                               max_queries=max_queries)
    runs = report.pop("_runs")
    qrels = {q: j for q, j in coll.qrels(ev.split).items() if q in runs["reranked"]}
    return {"reranked": report["reranked"], "first_stage": report["first_stage"], "queries": report["queries"],
            "per_query": per_query(qrels, runs["reranked"])}


def main(argv=None) -> dict:
    from rerankforge.eval.significance import compare, paired_bootstrap_ci
    from rerankforge.utils.io import write_json

    args = parse(argv)
    cfg, term = load_recipe(args)
    loss = term["name"]
    if cfg.eval.collection is None:
        raise SystemExit(f"{args.config}: the recipe needs an eval section (collection, split, depth)")
    with tempfile.TemporaryDirectory(prefix="parity-st-") as tmp:
        work = Path(args.work_dir or tmp)
        results = {}
        for name, fn in (("rerankforge", lambda d: train_rerankforge(cfg, d)),
                         ("sentence_transformers", lambda d: train_sentence_transformers(cfg, term, d))):
            d = work / name
            if name in args.skip:
                results[name] = json.loads((d / "parity_train.json").read_text())
            else:
                d.mkdir(parents=True, exist_ok=True)
                results[name] = fn(d)
                write_json(d / "parity_train.json", results[name])
            print(f"{name}: trained in {results[name]['train_seconds']} s", flush=True)
        for name, r in results.items():
            ev = evaluate(r["model"], cfg, args.eval_queries)
            r["eval"] = ev
            print(f"{name}: nDCG@10 {ev['reranked']['nDCG@10']:.4f}", flush=True)
        rf, st = (results[n]["eval"]["per_query"] for n in ("rerankforge", "sentence_transformers"))
        diff = compare(st, rf)  # delta = rerankforge - sentence-transformers
        diff["ci95"] = paired_bootstrap_ci(st, rf)
        for r in results.values():
            # wall: the train call (set-up, mined-groups cache lookup and export included for rerankforge);
            # loop: each framework's own training-loop clock
            r["pairs_per_s_wall"] = round(r["pairs"] / r["train_seconds"], 2)
            if r.get("loop_seconds"):
                r["pairs_per_s_loop"] = round(r["pairs"] / r["loop_seconds"], 2)
            r["model"] = Path(r["model"]).name if not args.work_dir else r["model"]
        out = {
            "command": "parity_st.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "recipe": {"config": args.config, "overrides": args.overrides, "loss": loss,
                       "sentence_transformers_loss": ST_LOSSES[loss], "epochs": cfg.optim.epochs,
                       "pairs_per_step": cfg.optim.batch_size * (cfg.data.group_size or 1),
                       "max_length": cfg.model.max_length, "bf16": cfg.bf16,
                       "attention_dropout": cfg.model.attention_dropout, "fast_dropout": cfg.model.fast_dropout},
            "eval": {"collection": cfg.eval.collection, "split": cfg.eval.split, "depth": cfg.eval.depth,
                     "first_stage_nDCG@10": results["rerankforge"]["eval"]["first_stage"]["nDCG@10"]},
            "rerankforge": results["rerankforge"], "sentence_transformers": results["sentence_transformers"],
            "rerankforge_minus_sentence_transformers": diff,
            "train_time_ratio": round(results["sentence_transformers"]["train_seconds"]
                                      / results["rerankforge"]["train_seconds"], 3),
        }
        for r in (out["rerankforge"], out["sentence_transformers"]):
            r["eval"].pop("per_query")
        write_json(Path(args.out), out)
    print(json.dumps({k: out[k] for k in ("rerankforge_minus_sentence_transformers", "train_time_ratio")}, indent=1))
    return out


if __name__ == "__main__":
    main()
