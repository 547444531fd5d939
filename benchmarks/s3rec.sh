#!/usr/bin/env bash
# Standard sequential-recommendation benchmark: Amazon Beauty, Sports_and_Outdoors and
# Toys_and_Games (S3-Rec preprocessing), leave-one-out, full ranking, seen items filtered.
# Validation (early stopping only) on 5,000 sampled users; epochs capped so that the three
# datasets fit in about 75 minutes on 2 CPU cores.
# Results: benchmarks/results/s3rec.json and benchmarks/results/s3rec.md (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/datasets/amazon-s3rec
.venv/bin/evorec -v bench \
  --data "$data/Beauty.txt" --data "$data/Toys_and_Games.txt" --data "$data/Sports_and_Outdoors.txt" \
  --models pop,ease,sasrec,gru4rec --set valid_users=5000 --set sasrec.epochs=40 \
  --set gru4rec.epochs=30 --out benchmarks/results/s3rec.json --quiet "$@"
