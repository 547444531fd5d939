"""Next-purchase NDCG@10 on Taobao UserBehavior: multi-task (next item + next purchase)
against single-task next-item models, all on the same next-purchase split.

Protocol: each user's last purchase is the target, the history every event before it;
full ranking, seen items kept (most purchases are of items viewed before). Ratios are
against the single-task SASRec (next item) run in the same process.

    .venv/bin/python benchmarks/multitask.py [--data PATH] [--min-events N] [--seeds N]
        [--variants pop,sasrec,single,multi,multi-item]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from evorec.data.load import load_dataset
from evorec.data.split import next_purchase_split
from evorec.evaluation.evaluator import evaluate
from evorec.models import MostPopular, MultiTask, SASRec

DATA = "../shared/datasets/taobao-behavior-sample/UserBehavior_head84k.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--min-events", type=int, default=2, help="k-core for users and items")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--variants", default="pop,sasrec,single,multi,multi-item")
    args = parser.parse_args()
    core = {"min_user_events": args.min_events, "min_item_events": args.min_events}
    dataset = load_dataset(args.data, preprocess_config=core)
    split = next_purchase_split(dataset)
    train = split.train.histories
    test = split.test
    repeats = np.mean([test.targets[r][0] in set(test.histories[r]) for r in range(len(test))])
    print(
        f"{dataset.n_users} users, {dataset.n_items} items, {dataset.n_events} events; "
        f"{len(test)} test / {len(split.valid)} validation purchases; "
        f"{int((train.behaviors == dataset.behaviors.index('buy')).sum())} purchases among "
        f"{len(train.items)} training events; {repeats:.1%} of test purchases are of an item "
        "in the history"
    )
    common = {"epochs": args.epochs, "patience": 10, "dim": 64, "max_len": 50}
    variants = {
        "pop": ("pop", lambda seed: MostPopular()),
        "sasrec": ("sasrec (next item)", lambda seed: SASRec(seed=seed, **common)),
        "single": (
            "single-task (next item, behaviours in)",
            lambda seed: MultiTask(seed=seed, purchase_weight=0.0, serve="item", **common),
        ),
        "multi": (
            "multi-task (item + purchase), purchase tower",
            lambda seed: MultiTask(seed=seed, **common),
        ),
        "multi-item": (
            "multi-task (item + purchase), item tower",
            lambda seed: MultiTask(seed=seed, serve="item", **common),
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for key in args.variants.split(","):
        name, make = variants[key]
        scores, seconds = [], []
        for seed in range(1 if name == "pop" else args.seeds):
            began = time.perf_counter()
            model = make(seed).fit(split)
            seconds.append(time.perf_counter() - began)
            scores.append(evaluate(model, split.test, ks=(10,), filter_seen=False).metrics)
        results[name] = {
            metric: float(np.mean([s[metric] for s in scores])) for metric in ("NDCG@10", "HR@10")
        }
        results[name]["NDCG@10 std"] = float(np.std([s["NDCG@10"] for s in scores]))
        results[name]["train_seconds"] = float(np.mean(seconds))
        print(f"{name}: {results[name]}", flush=True)
        if args.out:  # after every model, atomically: an interrupted run keeps what it did
            tmp = Path(f"{args.out}.tmp")
            tmp.write_text(json.dumps({"protocol": split.protocol, "results": results}, indent=2))
            os.replace(tmp, args.out)
    baseline = results.get("sasrec (next item)", {}).get("NDCG@10")
    print("| model | next-purchase NDCG@10 (± std over seeds) | HR@10 | × sasrec | train s |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        ratio = f"{row['NDCG@10'] / baseline:.2f}" if baseline else "-"
        print(
            f"| {name} | {row['NDCG@10']:.4f} ± {row['NDCG@10 std']:.4f} | {row['HR@10']:.4f} "
            f"| {ratio} | {row['train_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
