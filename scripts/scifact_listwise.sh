#!/usr/bin/env bash
# BM25 -> mine -> train -> evaluate for configs/scifact_listwise.yaml. Extra args go to `train`.
set -euo pipefail
C=rerankforge/resources/scifact
mkdir -p runs/scifact
rerankforge retrieve --collection $C --split train --retriever bm25 --depth 100 --out runs/scifact/bm25_train.trec
rerankforge mine --collection $C --split train --run runs/scifact/bm25_train.trec --negatives 99 \
  --out runs/scifact/groups_bm25_train.jsonl
rerankforge train --config configs/scifact_listwise.yaml "$@"
