"""Mine a distill config's groups, then keep only as many as its teacher can score in a budget.

    python scripts/label_budget.py --config configs/distill_scifact_gpu.yaml --seconds 160 \
        --out runs/distill_scifact_gpu/groups.budget.jsonl [key=value ...]

The teacher's pairs/s is measured on this machine (GPU when there is one) on the first mined
pairs, with the config's teacher_scoring settings; the groups file is then cut after the group
whose pairs fill ``seconds`` at that rate. Mining writes real queries first, then titles, then
sentences, so a cut drops pseudo-queries only. Pass the result to distill as ``groups=...``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rerankforge.data.beir import Collection
from rerankforge.data.groups import iter_groups, write_groups
from rerankforge.config import load_config
from rerankforge.labels.job import candidate_texts
from rerankforge.models import load_reranker
from rerankforge.pipelines.distill import DistillConfig
from rerankforge.pipelines.steps import mine_cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seconds", type=float, required=True, help="teacher labelling budget")
    ap.add_argument("--out", required=True, help="where the cut groups file goes")
    ap.add_argument("--bench-pairs", type=int, default=8192)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(DistillConfig, args.config, args.overrides)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    mined = mine_cached(cfg.mine, out_dir / "groups").path
    mine_s = time.perf_counter() - t

    text_of = Collection(cfg.mine.collection).corpus.text
    teacher = load_reranker(cfg.teacher).to("cuda" if torch.cuda.is_available() else "cpu")
    sc = cfg.teacher_scoring
    queries, docs = [], []
    for g in iter_groups(mined):
        texts = candidate_texts(g, text_of)
        queries += [g.query] * len(texts)
        docs += texts
        if len(queries) >= args.bench_pairs:
            break
    warm = min(len(queries), sc.batch_size)
    teacher.score_pairs(queries[:warm], docs[:warm], batch_size=sc.batch_size, bf16=sc.bf16)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    teacher.score_pairs(queries, docs, batch_size=sc.batch_size, bf16=sc.bf16)
    rate = len(queries) / (time.perf_counter() - t)
    budget_pairs = int(rate * args.seconds)

    kept, pairs, total = [], 0, 0
    for g in iter_groups(mined):
        total += 1
        if pairs < budget_pairs:
            kept.append(g)
            pairs += len(g.candidates)
    write_groups(args.out, kept)
    summary = {"mined_groups": total, "mine_seconds": round(mine_s, 1), "bench_pairs": len(queries),
               "teacher_pairs_per_s": round(rate, 1), "device": str(teacher.device), "budget_seconds": args.seconds,
               "kept_groups": len(kept), "kept_pairs": pairs, "out": args.out}
    Path(args.out + ".budget.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
