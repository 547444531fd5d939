#!/usr/bin/env bash
# HSTU scaling curve on MovieLens latest-small: six sizes from dim 4 / 1 layer to dim 128 /
# 3 layers (about 46x in parameters), 50 events of history, leave-one-out, full ranking,
# epochs capped at 25 (patience 4). More sizes later: the same command with other --size
# values and --add.
# Results: benchmarks/results/hstu-scaling.{json,md,png} (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/evorec -v sweep --data ../shared/datasets/ml-latest-small --model hstu \
  --size dim=4,layers=1 --size dim=8,layers=1 --size dim=16,layers=1 --size dim=32,layers=2 \
  --size dim=64,layers=2 --size dim=128,layers=3 \
  --set max_len=50 --set epochs=25 --set patience=4 \
  --out benchmarks/results/hstu-scaling.json --quiet "$@"
