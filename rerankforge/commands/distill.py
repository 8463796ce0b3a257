"""``rerankforge distill --config C [key=value ...]``: teacher scores -> student -> side-by-side report."""

from __future__ import annotations


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.pipelines.distill import DistillConfig

    p = sub.add_parser("distill", help="distil a teacher reranker into a smaller student and compare them",
                       description="Distil a reranker. Overrides are dotted keys, e.g. student.layers=[0,3] "
                                   "train.optim.epochs=2 eval.depth=50.")
    add_config_args(p, DistillConfig, config_required=True, example="student.layers=[0,3]")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.pipelines.distill import DistillConfig, run_distill

    run_distill(config_from_args(DistillConfig, args))
    return 0
