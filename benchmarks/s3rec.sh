#!/usr/bin/env bash
# Standard sequential-recommendation benchmark: Amazon Beauty, Sports_and_Outdoors and
# Toys_and_Games (S3-Rec preprocessing), leave-one-out, full ranking, seen items filtered.
# Results: results/s3rec.json and results/s3rec.md (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/datasets/amazon-s3rec
.venv/bin/evorec -v bench \
  --data "$data/Beauty.txt" --data "$data/Sports_and_Outdoors.txt" --data "$data/Toys_and_Games.txt" \
  --models pop,ease,sasrec,gru4rec --out results/s3rec.json --quiet "$@"
