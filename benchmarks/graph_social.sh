#!/usr/bin/env bash
# Graph and social models on the two datasets with user-user edges: Ciao (ratings with
# times, trust edges) and HetRec 2011 Last.fm (listening counts ordered by count, friend
# edges). Leave-one-out, full ranking, standard seen-item filtering; MostPopular is the
# same-process baseline of the NDCG@10 ratio. The social model runs twice: with the edges
# and with use_social=false (the same network, seed and training, no ties).
# Last.fm runs with capped epochs and shorter sequences so that it fits on 2 CPU cores
# (run with OMP_NUM_THREADS=1 on a busy machine: one thread per process is faster there).
# Results: benchmarks/results/graph_social_{ciao,lastfm}.{json,md} and
# social_no_edges_{ciao,lastfm}.{json,md} (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/datasets
bench() { .venv/bin/evorec -v bench --quiet "$@"; }
ciao=(--data "$data/ciao" --set epochs=60)
lastfm=(--data "$data/lastfm-hetrec2011" --set epochs=15 --set max_len=30)
case "${1:-all}" in
  ciao | all)
    bench "${ciao[@]}" --models pop,sasrec,lightgcn,social --set lightgcn.epochs=80 \
      --out benchmarks/results/graph_social_ciao.json
    bench "${ciao[@]}" --models pop,social --set social.use_social=false \
      --out benchmarks/results/social_no_edges_ciao.json ;;&
  lastfm | all)
    bench "${lastfm[@]}" --models pop,sasrec,lightgcn,social --set lightgcn.epochs=40 \
      --set lightgcn.batch_size=8192 --out benchmarks/results/graph_social_lastfm.json
    bench "${lastfm[@]}" --models pop,social --set social.use_social=false \
      --out benchmarks/results/social_no_edges_lastfm.json ;;
  *) echo "usage: $0 [ciao|lastfm|all]" >&2; exit 2 ;;
esac
