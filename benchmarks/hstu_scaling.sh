#!/usr/bin/env bash
# HSTU scaling curve on MovieLens latest-small: five sizes from dim 8 / 1 layer to dim 128 /
# 3 layers (about 40x in parameters), 50 events of history, leave-one-out, full ranking,
# epochs capped at 25 (patience 4). Extra sizes: --size dim=256,layers=4 (and more epochs).
# Results: benchmarks/results/hstu-scaling.{json,md,png} (summarised in docs/benchmarks.md).
# A smaller size was added to the same results afterwards (docs/benchmarks.md):
#   evorec sweep ... --size dim=4,layers=1 --add (same --data, --model and --set)
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/evorec -v sweep --data ../shared/datasets/ml-latest-small --model hstu \
  --size dim=8,layers=1 --size dim=16,layers=1 --size dim=32,layers=2 --size dim=64,layers=2 \
  --size dim=128,layers=3 \
  --set max_len=50 --set epochs=25 --set patience=4 \
  --out benchmarks/results/hstu-scaling.json --quiet "$@"
