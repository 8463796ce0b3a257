"""Fast dropout vs torch dropout, same recipe (configs/scifact_bce.yaml, checkpoint dropout): paired per-query nDCG@10
on SciFact test from the two reranked runs (see bench/parity_fast_vs_torch_dropout.json for the commands that made them).

    python scripts/compare_dropout_runs.py [FAST_RUN_DIR] [TORCH_DROPOUT_RUN_DIR]
"""

import json
import sys
from pathlib import Path

from rerankforge.data.beir import Collection
from rerankforge.data.trec import read_run
from rerankforge.eval.metrics import per_query
from rerankforge.eval.significance import compare, paired_bootstrap_ci


def main(fast_dir: str = "runs/parity/rerankforge/eval_test", torch_dir: str = "runs/parity_torch_dropout") -> dict:
    qrels = Collection.of("bundled:scifact").qrels("test")
    fast = per_query(qrels, read_run(str(Path(fast_dir) / "reranked.trec")))
    torch_dropout = per_query(qrels, read_run(str(Path(torch_dir) / "reranked.trec")))
    diff = compare(torch_dropout, fast)  # delta = fast - torch dropout
    diff["ci95"] = paired_bootstrap_ci(torch_dropout, fast)
    summary = json.loads((Path(torch_dir) / "train_summary.json").read_text())
    return {"fast_minus_torch_dropout": diff,
            "torch_dropout": {"pairs": summary["pairs"], "train_seconds": round(summary["train_seconds"], 1),
                              "pairs_per_s": round(summary["pairs_per_s"], 2),
                              "eval": json.loads((Path(torch_dir) / "eval.json").read_text())["reranked"]}}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:]), indent=1))
