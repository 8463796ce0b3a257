"""How much glibc's mmap/munmap churn costs a CPU training step (rerankforge/utils/allocator.py).

Runs the same MiniLM-L6 forward+backward+AdamW step (64 sequences x 256 tokens, bf16 autocast where
the CPU has native bf16, else fp32) in two fresh processes, glibc defaults vs the tuned allocator,
alternating, and prints the median step time of each and their ratio. Writes --out JSON.

    python scripts/bench_malloc.py --steps 6 --rounds 2 --out runs/bench_malloc.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_STEP = r"""
import json, sys, time, torch
from rerankforge.utils.allocator import tune_cpu_allocator
from rerankforge.models.precision import cpu_native_bf16
from rerankforge.models.base import resolve_model_path
from transformers import AutoModel
tuned = tune_cpu_allocator()
steps, batch, length = map(int, sys.argv[1:4])
m = AutoModel.from_pretrained(resolve_model_path("default"), attn_implementation="sdpa")
m.config.attention_probs_dropout_prob = 0.0
m.train()
x = torch.randint(1000, 20000, (batch, length), generator=torch.Generator().manual_seed(0))
opt = torch.optim.AdamW(m.parameters(), 1e-5)
bf16 = cpu_native_bf16()
times = []
for _ in range(steps + 2):
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = m(input_ids=x).last_hidden_state
    out.float().pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - t)
print(json.dumps({"tuned": tuned, "bf16": bf16, "step_s": times[2:]}))
"""


def _run(tune: bool, steps: int, batch: int, length: int) -> dict:
    env = {**os.environ, "RERANKFORGE_TUNE_MALLOC": "1" if tune else "0"}
    out = subprocess.run([sys.executable, "-c", _STEP, str(steps), str(batch), str(length)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds (each a fresh process per arm)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    arms: dict[str, list[float]] = {"glibc_default": [], "tuned": []}
    bf16 = None
    for _ in range(args.rounds):
        for name, tune in (("glibc_default", False), ("tuned", True)):
            res = _run(tune, args.steps, args.batch, args.length)
            if tune and not res["tuned"]:
                sys.exit("the tuned arm could not set mallopt (not glibc?)")
            bf16 = res["bf16"]
            arms[name].extend(res["step_s"])
    report = {name: {"median_step_s": round(statistics.median(v), 3), "min_step_s": round(min(v), 3)}
              for name, v in arms.items()}
    report["speedup"] = round(report["glibc_default"]["median_step_s"] / report["tuned"]["median_step_s"], 3)
    report["settings"] = {"batch": args.batch, "length": args.length, "steps": args.steps,
                          "rounds": args.rounds, "bf16": bf16, "threads": os.environ.get("OMP_NUM_THREADS")}
    print(json.dumps(report, indent=2))
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
