#!/usr/bin/env bash
# Graph and social models on the two datasets with user-user edges: Ciao (ratings with
# times, trust edges) and HetRec 2011 Last.fm (listening counts ordered by count, friend
# edges). Leave-one-out, full ranking, standard seen-item filtering; MostPopular is the
# same-process baseline of the NDCG@10 ratio. The second run is the social model with the
# edges switched off (use_social=false): the same network, seed and training, no ties.
# Results: benchmarks/results/graph_social.{json,md} and social_no_edges.{json,md}
# (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/datasets
.venv/bin/evorec -v bench --data "$data/ciao" --data "$data/lastfm-hetrec2011" \
  --models pop,sasrec,lightgcn,social --set lightgcn.epochs=80 --set sasrec.epochs=60 \
  --set social.epochs=60 --out benchmarks/results/graph_social.json --quiet "$@"
.venv/bin/evorec -v bench --data "$data/ciao" --data "$data/lastfm-hetrec2011" \
  --models pop,social --set social.epochs=60 --set social.use_social=false \
  --out benchmarks/results/social_no_edges.json --quiet "$@"
