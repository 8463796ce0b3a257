"""``rerankforge train --config C [key=value ...]`` (also under ``accelerate launch -m rerankforge``)."""

from __future__ import annotations


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.train.config import TrainConfig

    p = sub.add_parser("train", help="train a reranker from a YAML config",
                       description="Train a reranker: mine its groups first when the config declares data.mine, "
                                   "export <output_dir>/model, evaluate when eval.collection is set. Overrides are "
                                   "dotted keys, e.g. optim.lr=2e-5 model.max_length=192.")
    add_config_args(p, TrainConfig, config_required=True)
    return p


def run(args) -> int:
    from accelerate import PartialState

    from rerankforge.config import config_from_args
    from rerankforge.pipelines.steps import train_recipe
    from rerankforge.train.config import TrainConfig
    from rerankforge.utils.table import metrics_table

    cfg = config_from_args(TrainConfig, args)
    result = train_recipe(cfg)
    if PartialState().is_main_process:
        print(f"model exported to {result['model_dir']}")
        report = result.get("eval")
        if report:
            metrics_table({"first stage": report["first_stage"], "reranked": report["reranked"]},
                          title=f"{cfg.eval.split}: reranking top-{cfg.eval.depth} ({report['queries']} queries)")
    return 0
