#!/usr/bin/env bash
# RecTools 0.19's SASRec (softmax loss, 64 factors, 2 blocks, session length 50) on an S3-Rec
# file under evorec's protocol (leave-one-out, full ranking, history items removed, early
# stopping on validation NDCG@10), one torch thread. Builds its own virtual environment
# (benchmarks/peers/.venv-rectools) on first use; arguments go to rectools_sasrec.py
# (--data, --out, --users, --epochs, --patience, --max-seconds, --seed, ...).
#
# Side by side with evorec's default SASRec, both at once, one torch thread each, from the
# repository root:
#
#   bash benchmarks/peers/rectools_sasrec.sh --out benchmarks/results/peers-rectools-beauty.json \
#     --max-seconds 1500 &
#   OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/evorec -v bench \
#     --data ../shared/datasets/amazon-s3rec/Beauty.txt --models sasrec \
#     --out benchmarks/results/peers-evorec-beauty-rectools.json --quiet
#   wait
#   .venv/bin/python benchmarks/peers/compare.py \
#     --recbole benchmarks/results/peers-rectools-beauty.json \
#     --evorec benchmarks/results/peers-evorec-beauty-rectools.json \
#     --out benchmarks/results/peers-beauty-rectools.json
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=benchmarks/peers/.venv-rectools
# torch first and pinned: the CPU build of 2.13.0 is on this machine's wheel path, any other
# version would pull a CUDA build; pinning it again keeps RecTools' resolve from replacing it.
if [[ ! -f $venv/.complete ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==2.13.0"
  "$venv/bin/pip" install --quiet "rectools[torch]==0.19.0" "torch==2.13.0"
  "$venv/bin/python" -c "import torch, rectools.models; assert torch.__version__.startswith('2.13.0')"
  touch "$venv/.complete"
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec "$venv/bin/python" benchmarks/peers/rectools_sasrec.py "$@"
