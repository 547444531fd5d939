#!/usr/bin/env bash
# Interest-evolution models on the datasets of ../shared/datasets: leave-one-out, full
# ranking, seen items filtered unless the dataset has repeat consumption (Taobao), early
# stopping on validation NDCG@10, epochs capped at 50.
#   bash benchmarks/evolution.sh small    # LastFM, ml-latest-small, Taobao: all nine models
#   bash benchmarks/evolution.sh amazon   # Beauty, Toys, Sports: the models s3rec.sh leaves out
# Results: benchmarks/results/evolution-<part>.{json,md} (summarised in docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/datasets
part=${1:?usage: evolution.sh small|amazon}
shift
case "$part" in
  small)
    sets=(--data "$data/amazon-s3rec/LastFM.txt" --data "$data/ml-latest-small"
          --data "$data/taobao-behavior-sample/UserBehavior_head84k.csv"
          --models pop,ease,gru4rec,lstm,caser,sasrec,bert4rec,tisasrec,hstu) ;;
  amazon)
    sets=(--data "$data/amazon-s3rec/Beauty.txt" --data "$data/amazon-s3rec/Toys_and_Games.txt"
          --data "$data/amazon-s3rec/Sports_and_Outdoors.txt"
          --models lstm,caser,bert4rec,tisasrec,hstu --set valid_users=5000) ;;
  *) echo "unknown part '$part': small or amazon" >&2; exit 2 ;;
esac
.venv/bin/evorec -v bench "${sets[@]}" --set epochs=50 \
  --out "benchmarks/results/evolution-$part.json" --quiet "$@"
