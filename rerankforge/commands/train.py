"""``rerankforge train --config C [key=value ...]`` (also under ``accelerate launch -m rerankforge``)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("train", help="train a reranker from a YAML config",
                       description="Train a reranker. Overrides are dotted keys, e.g. optim.lr=2e-5 model.max_length=192.")
    p.add_argument("--config", required=True, help="YAML training config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied after the YAML")
    return p


def run(args) -> int:
    from accelerate import PartialState

    from rerankforge.train import load_config, train
    from rerankforge.utils.io import write_json
    from rerankforge.utils.table import metrics_table

    cfg = load_config(args.config, args.overrides)
    model_dir = train(cfg)
    state = PartialState()
    if state.is_main_process:
        print(f"model exported to {model_dir}")
        if cfg.eval.collection:
            from rerankforge.eval.pipeline import evaluate_reranker

            report = evaluate_reranker(model_dir, cfg.eval.collection, cfg.eval.split, cfg.eval.run, cfg.eval.depth,
                                       cfg.eval.measures, cfg.eval.batch_size, cfg.bf16, out_dir=Path(cfg.output_dir))
            report.pop("_runs")
            write_json(Path(cfg.output_dir) / "eval.json", report)
            metrics_table({"first stage": report["first_stage"], "reranked": report["reranked"]},
                          title=f"{cfg.eval.split}: reranking top-{cfg.eval.depth}")
    return 0
