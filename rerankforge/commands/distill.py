"""``rerankforge distill --config C [key=value ...]``: teacher scores -> student -> side-by-side report."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("distill", help="distil a teacher reranker into a smaller student and compare them",
                       description="Distil a reranker. Overrides are dotted keys, e.g. student.layers=[0,3] "
                                   "train.optim.epochs=2 eval.depth=50.")
    p.add_argument("--config", required=True, help="YAML distillation config (see configs/distill_scifact.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied after the YAML")
    return p


def run(args) -> int:
    from rerankforge.distill import DistillConfig, run_distill
    from rerankforge.train.config import load_config

    run_distill(load_config(args.config, args.overrides, schema=DistillConfig))
    return 0
