#!/usr/bin/env bash
# HSTU scaling curve on MovieLens latest-small: six sizes from dim 8 / 1 layer to dim 256 /
# 4 layers (about 75x in parameters), 200 events of history, leave-one-out, full ranking.
# Results: benchmarks/results/hstu-scaling.{json,md,png} (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/evorec -v sweep --data ../shared/datasets/ml-latest-small --model hstu \
  --size dim=8,layers=1 --size dim=16,layers=1 --size dim=32,layers=2 --size dim=64,layers=2 \
  --size dim=128,layers=3 --size dim=256,layers=4 \
  --set max_len=200 --set epochs=40 --set patience=5 \
  --out benchmarks/results/hstu-scaling.json --quiet "$@"
