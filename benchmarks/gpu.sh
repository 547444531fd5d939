#!/usr/bin/env bash
# One short prepared run on a CUDA machine: SASRec and HSTU at 1M items under bf16 autocast
# (sampled softmax, 1,024 shared negatives, dense AdamW and sparse_items side by side):
# sequences/s, epoch time (extrapolated from the timed steps), peak device memory; then the
# exact-scoring throughput of 1M x 64 float32 item vectors (matmul + top-100, 4,096 queries a
# batch) beside a device-to-device copy's bandwidth, the memory-bandwidth limit in practice.
# The CPU figures to compare with are in benchmarks/results/large-catalogue.json.
#
#   bash benchmarks/gpu.sh   # (PYTHON=.venv/bin/python to choose the interpreter) writes benchmarks/results/gpu-large-catalogue.json
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"${PYTHON:-python}" benchmarks/large_catalogue.py \
  --out benchmarks/results/gpu-large-catalogue.json \
  --device cuda --amp --models sasrec hstu --items 1000000 --steps 50 --seeds 0 --scoring
