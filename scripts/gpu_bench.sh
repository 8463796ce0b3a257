#!/usr/bin/env bash
# GPU section of bench_speed.json (issue 15), one prepared run for a lent GPU (~15 min in all):
#   1. scripts/bench_speed.py --device cuda: bf16 training (listwise groups of 16, pointwise) and
#      inference against sentence-transformers on the same GPU, same weights/data/lengths, A/B/A/B,
#      at batch 32 (the CPU setting) and at a large batch (the >= 20,000 pairs/s target);
#   2. faiss-gpu search throughput for dense mining (if faiss has GPUs): exact inner-product search
#      of 1M x 384 vectors, 10k queries, top-100 (the bench_mining.py dense shape).
# Everything lands under the "gpu" key of $OUT (default bench_speed.json), merged into what is there.
# Without a CUDA device it says so, records {"gpu": {"skipped": ...}} and exits 0; with DRY_RUN=1 it
# then runs every step anyway on the CPU at --quick sizes under "gpu_dry_run*" keys (a check that
# the commands parse and write, not a measurement).
#
# usage: OUT=bench_speed.json [PYTHON=python3] [QUICK=1] [DRY_RUN=1] bash scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench_speed.json}
STEPS=${STEPS:-20}
BIG_BATCH=${BIG_BATCH:-512}
skip() {  # record why the GPU section is missing; never fail the caller
  echo "gpu_bench: $1"
  REASON="$1" OUT="$OUT" $PY - <<'PY'
import json, os, pathlib
p = pathlib.Path(os.environ["OUT"])
data = json.loads(p.read_text()) if p.exists() else {}
data.setdefault("gpu", {})["skipped"] = os.environ["REASON"]
tmp = p.with_name(p.name + ".tmp"); tmp.write_text(json.dumps(data, indent=2) + "\n"); tmp.replace(p)
PY
}
DEVICE=cuda NEST1=gpu NEST2=gpu_large_batch
$PY - <<'PY'
import sys, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
sys.exit(0 if torch.cuda.is_available() else 1)
PY
if [ $? != 0 ]; then
  skip "no CUDA device visible to torch ($(hostname)); nothing measured on a GPU"
  [ "${DRY_RUN:-0}" = 1 ] || exit 0
  echo "gpu_bench: DRY_RUN=1: running the steps on the CPU at --quick sizes (not a measurement)"
  DEVICE=cpu NEST1=gpu_dry_run NEST2=gpu_dry_run_large_batch QUICK=1
fi
if ! $PY -c "import sentence_transformers" 2>/dev/null; then
  skip "sentence-transformers is not importable on this machine; no side-by-side ratios"
  ST=0
else
  ST=1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
Q=""
[ "${QUICK:-0}" = 1 ] && Q="--quick"
if [ $ST = 1 ]; then
  # batch 32, max length 256: the CPU settings, so the ratios compare with the CPU table
  timeout ${T1:-300} $PY scripts/bench_speed.py --device $DEVICE --nest $NEST1 --merge --out "$OUT" $Q \
    --sections ceiling,train,train_pointwise,inference --batch 32 --max-length 256 --steps $STEPS --warmup 3 \
    --reps 2 --queries 300 --depth 10 --infer-batch 256 --infer-variants fp32,fast,st_bf16_weights --ceiling-n 8192 \
    || echo "gpu_bench: batch-32 run failed (rc $?)"
  # a large batch: what the GPU can do per pair (the >= 20,000 pairs/s training target)
  timeout ${T2:-240} $PY scripts/bench_speed.py --device $DEVICE --nest $NEST2 --merge --out "$OUT" $Q \
    --sections train,inference --batch $BIG_BATCH --max-length 256 --steps 10 --warmup 3 --reps 2 \
    --no-attention-dropout0 --queries 300 --depth 10 --infer-batch 1024 --infer-variants fp32,fast,st_bf16_weights \
    || echo "gpu_bench: large-batch run failed (rc $?)"
fi
# faiss-gpu: exact search of random unit vectors (the encoder's cost is measured above)
NEST=$NEST1 OUT="$OUT" timeout ${T3:-120} $PY - <<'PY' || echo "gpu_bench: faiss step failed"
import json, os, pathlib, time
import numpy as np
p = pathlib.Path(os.environ["OUT"])
res = {}
try:
    import faiss
    ngpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
except ImportError as err:
    faiss, ngpu, res["skipped"] = None, 0, f"faiss not importable: {err}"
if faiss is not None and ngpu == 0:
    res["skipped"] = "faiss has no GPU support here (faiss-cpu build or no device); faiss-gpu not measured"
if faiss is not None and ngpu > 0:
    rng = np.random.default_rng(0)
    n, nq, dim, k = 1_000_000, 10_000, 384, 100
    xb = rng.standard_normal((n, dim), dtype=np.float32); xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = rng.standard_normal((nq, dim), dtype=np.float32); xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    gres = faiss.StandardGpuResources()
    t0 = time.perf_counter(); index = faiss.GpuIndexFlatIP(gres, dim); index.add(xb); t_add = time.perf_counter() - t0
    index.search(xq[:100], k)
    t0 = time.perf_counter(); index.search(xq, k); t_search = time.perf_counter() - t0
    res = {"index": "GpuIndexFlatIP", "passages": n, "queries": nq, "dim": dim, "k": k, "add_s": round(t_add, 3),
           "search_s": round(t_search, 3), "queries_per_s": round(nq / t_search, 1), "gpus": ngpu}
data = json.loads(p.read_text()) if p.exists() else {}
data.setdefault(os.environ["NEST"], {})["faiss"] = res
tmp = p.with_name(p.name + ".tmp"); tmp.write_text(json.dumps(data, indent=2) + "\n"); tmp.replace(p)
print("faiss:", res)
PY
echo "gpu_bench: wrote the gpu sections of $OUT"
