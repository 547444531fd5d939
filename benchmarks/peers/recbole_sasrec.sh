#!/usr/bin/env bash
# RecBole 1.2.1's SASRec (CE loss, hidden size 64, 2 layers, max length 50) on an S3-Rec file
# under evorec's protocol (leave-one-out, full ranking, history items removed, early stopping
# on validation NDCG@10), one torch thread. Builds its own virtual environment
# (benchmarks/peers/.venv-recbole) on first use; arguments go to recbole_sasrec.py
# (--data, --out, --users, --epochs, --patience, --seed, --keep-seen, ...).
#
# Side by side with evorec's default SASRec, both at once, one torch thread each, from the
# repository root:
#
#   bash benchmarks/peers/recbole_sasrec.sh --out benchmarks/results/peers-recbole-beauty.json &
#   OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/evorec -v bench \
#     --data ../shared/datasets/amazon-s3rec/Beauty.txt --models sasrec \
#     --out benchmarks/results/peers-evorec-beauty.json --quiet
#   wait
#   .venv/bin/python benchmarks/peers/compare.py \
#     --recbole benchmarks/results/peers-recbole-beauty.json \
#     --evorec benchmarks/results/peers-evorec-beauty.json \
#     --out benchmarks/results/peers-beauty.json
#
# Both validate on every user and time an epoch's training plus validation (evorec's
# history wall_seconds, RecBole's curve wall_seconds), data preparation excluded.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=benchmarks/peers/.venv-recbole
# torch first and pinned: the CPU build of 2.13.0 is on this machine's wheel path, any other
# version would pull a CUDA build. RecBole itself without its dependencies: it pins ray, which
# only its hyperparameter search imports; plotly and thop are imported lazily by parts not
# used here.
requirements=(
  "numpy<2" "pandas<3" "scipy<2" "scikit-learn<2" "tqdm<5" "colorlog==4.7.2" "colorama==0.4.4"
  "pyyaml<7" "tensorboard<3" "tabulate<1" "texttable<2" "psutil<8"
)
if [[ ! -f $venv/.complete ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "torch==2.13.0"
  "$venv/bin/pip" install --quiet --no-deps "recbole==1.2.1"
  "$venv/bin/pip" install --quiet "${requirements[@]}" "torch==2.13.0"
  "$venv/bin/python" -c "import recbole.trainer, recbole.data, recbole.model.sequential_recommender"
  touch "$venv/.complete"
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec "$venv/bin/python" benchmarks/peers/recbole_sasrec.py "$@"
