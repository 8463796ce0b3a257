"""``rerankforge evaluate --collection C --split S --run A.trec [--run B.trec ...] [--json OUT]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rerankforge.config import option, require


@dataclass
class EvaluateConfig:
    collection: Optional[str] = option(None, flag="--collection", help="BEIR collection directory")
    split: Optional[str] = option(None, flag="--split", help="qrels split")
    run: list[str] = option(factory=list, flag="--run", repeat=True, help="TREC run (repeatable)")
    measures: list[str] = option(factory=lambda: ["nDCG@10", "RR@10", "R@100", "AP@100"], flag="--measures",
                                 help="ir-measures strings")
    json: Optional[str] = option(None, flag="--json", help="write {run file name: {metric: value}} here")

    def validate(self) -> None:
        require(self, "collection", "split", "run")


def add_parser(sub):
    from rerankforge.config import add_config_args

    p = sub.add_parser("evaluate", help="evaluate TREC runs with ir-measures",
                       description="Qrels are used as they are: judged documents missing from the corpus count as "
                                   "never retrieved (with a warning), so metrics match the official ones.")
    add_config_args(p, EvaluateConfig, example="measures=[nDCG@10,P@5]")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.data.beir import Collection
    from rerankforge.data.trec import read_run
    from rerankforge.eval import evaluate
    from rerankforge.utils.io import write_json
    from rerankforge.utils.table import metrics_table

    cfg = config_from_args(EvaluateConfig, args)
    collection = Collection(cfg.collection)
    qrels = collection.qrels(cfg.split)
    results = {Path(path).name: evaluate(qrels, read_run(path, collection.queries, collection.documents), cfg.measures)
               for path in cfg.run}
    metrics_table(results, title=f"{collection.root.name} / {cfg.split}")
    if cfg.json:
        write_json(cfg.json, results)
    return 0
