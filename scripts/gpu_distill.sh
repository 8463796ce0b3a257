#!/usr/bin/env bash
# Distillation on a lent GPU within fixed time budgets (configs/distill_scifact_gpu.yaml):
#   1. mine every train/title/sentence query, measure the teacher's labelling rate on this GPU and
#      keep the groups it can score in LABEL_SECONDS (scripts/label_budget.py);
#   2. `rerankforge label teacher` scores them (bf16, resumable);
#   3. `accelerate launch -m rerankforge distill` on the labelled groups: the student trains (bf16)
#      for whatever is left of TOTAL_SECONDS after RESERVE_SECONDS for evaluation and packing
#      (train.optim.max_minutes), then both models are evaluated on SciFact test on the GPU;
#   4. pack the student (tar split into 15 MB parts) and the reports into $DEST.
# Then, on the CPU that serves the models: unpack into runs/distill_scifact_gpu/model and run
#   rerankforge distill --config configs/distill_scifact_gpu.yaml eval_only=true
#
# usage: TOTAL_SECONDS=540 LABEL_SECONDS=120 bash scripts/gpu_distill.sh TEACHER_DIR DEST [distill overrides...]
set -euo pipefail
TEACHER=${1:?teacher model directory}
DEST=${2:?directory for the packed student and the logs}
shift 2
CFG=configs/distill_scifact_gpu.yaml
RUN=runs/distill_scifact_gpu
mkdir -p "$DEST" "$RUN"
START=$(date +%s)
C=rerankforge/resources/scifact
python3 - <<'PY'
import torch, transformers, accelerate
print("torch", torch.__version__, "transformers", transformers.__version__, "accelerate", accelerate.__version__,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
PY
python3 scripts/label_budget.py --config $CFG --seconds "${LABEL_SECONDS:-160}" --bench-pairs "${BENCH_PAIRS:-8192}" --out $RUN/groups.budget.jsonl \
  teacher="$TEACHER" "$@"
python3 -m rerankforge label teacher --groups $RUN/groups.budget.jsonl --out $RUN/groups.teacher.jsonl \
  --collection $C --model "$TEACHER" --batch-size 512 --batch-queries 256 --no-progress
# 40 s of the distill run go to start-up: imports, reading the groups, the student's init
MINUTES=$(python3 -c "print(round(max(0.5, (${TOTAL_SECONDS:-540} - ($(date +%s) - $START) - ${RESERVE_SECONDS:-75} - 40) / 60), 2))")
echo "training budget: $MINUTES min"
set +e  # pack whatever was trained even if the evaluation fails
python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
  -m rerankforge distill --config $CFG teacher="$TEACHER" groups=$RUN/groups.teacher.jsonl progress=false \
  train.optim.max_minutes=$MINUTES "$@"
rc=$?
cp $RUN/distill_report.json $RUN/distill_report.gpu.json
tar -C $RUN -cf "$DEST/reports.tar" distill_report.gpu.json train_summary.json groups.budget.jsonl.budget.json \
  config.yaml distill_config.yaml groups.teacher.jsonl.label.json
tar -C $RUN -cf - model | split -b 15M - "$DEST/student.tar.part-"
ls -la "$DEST"
exit $rc
