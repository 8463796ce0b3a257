"""Fast dropout vs torch dropout, same recipe (configs/scifact_bce.yaml, checkpoint dropout): paired per-query nDCG@10
on SciFact test from the two reranked runs (see bench/parity_fast_vs_torch_dropout.json for the commands that made them)."""
import json
from rerankforge.data.beir import Collection
from rerankforge.data.trec import read_run
from rerankforge.eval.metrics import per_query
from rerankforge.eval.significance import compare, paired_bootstrap_ci
coll = Collection.of("bundled:scifact")
qrels = coll.qrels("test")
fast = read_run("runs/parity/rerankforge/eval_test/reranked.trec")
torchd = read_run("runs/parity_torch_dropout/reranked.trec")
a, b = per_query(qrels, torchd), per_query(qrels, fast)
d = compare(a, b); d["ci95"] = paired_bootstrap_ci(a, b)
summ = json.load(open("runs/parity_torch_dropout/train_summary.json"))
out = {"fast_minus_torch_dropout": d,
       "torch_dropout": {"pairs": summ["pairs"], "train_seconds": round(summ["train_seconds"], 1), "pairs_per_s": round(summ["pairs_per_s"], 2),
                         "eval": json.load(open("runs/parity_torch_dropout/eval.json"))["reranked"]}}
print(json.dumps(out, indent=1))
