"""Forgetting by sharded (SISA) training: what sharding costs in accuracy, what forgetting
one user costs against a full retrain, and whether forgotten users look like strangers to
a membership-inference attack.

A share of the users (``--strangers``) is held out of training entirely: the never-seen
users of the attack. On the others, for each shard count ``n``:

1. a ``sharded`` model (``n`` members of ``--model``) is trained on the leave-one-out
   split, each member early-stopped on its own shard's validation users, and tested
   (NDCG@10, full ranking);
2. the refit: the same settings with the epochs validation chose (the members' median,
   as ``evorec train --refit`` does) trained on every event of those users, timed (the
   full retrain) and saved;
3. ``evorec forget``'s function forgets one random user, ``--repeats`` times from the
   same saved model (end-to-end: load, retrain the user's shard, save), timed.
   Times are wall seconds and this process's CPU seconds (one thread: the CPU time does
   not grow when other jobs share the machine);
4. the attack (``evaluation/membership.py``: the mean log-probability the model gives
   each of a user's last 20 events): AUC of ``--forget`` random training users against
   the never-seen users before forgetting them, and after ``forget`` removed them all.

The JSON is rewritten after each shard count. One torch thread.

    .venv/bin/python benchmarks/forget.py --data ../shared/datasets/ml-latest-small \\
        --out benchmarks/results/forget-ml-latest-small.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from evorec.config import apply_override
from evorec.data.dataset import Dataset
from evorec.data.load import load_dataset
from evorec.data.split import leave_one_out
from evorec.evaluation.evaluator import evaluate
from evorec.evaluation.membership import membership_auc
from evorec.models import get_model_class
from evorec.models.ensemble import Sharded
from evorec.training.forget import forget
from evorec.training.incremental import drop_erased
from evorec.training.pipeline import refit_settings

METRICS = ("HR@10", "NDCG@10")


def run_shards(
    n: int, args: argparse.Namespace, data: Dataset, strangers: Any, settings: dict[str, Any]
) -> dict[str, Any]:
    plan = {"model": args.model, "shards": n, "settings": settings, "seed": args.seed}
    split = leave_one_out(data)
    began = time.perf_counter()
    selection = Sharded(plan).fit(split)
    select_seconds = time.perf_counter() - began
    test = evaluate(selection, split.test, ks=(10,)).metrics
    print(f"shards {n}: selection {select_seconds:.0f}s, test {test['NDCG@10']:.4f}", flush=True)
    chosen = refit_settings(selection)
    model = Sharded({**plan, **chosen})
    began, cpu = time.perf_counter(), time.process_time()
    model.fit(data)
    full_seconds, full_cpu = time.perf_counter() - began, time.process_time() - cpu
    row: dict[str, Any] = {
        "shards": n,
        "test": {m: round(test[m], 5) for m in METRICS},
        "valid_ndcg10": [
            m.get("best_valid", {}).get("NDCG@10") for m in selection.fit_info["members"]
        ],
        "best_epochs": [m.get("best_epoch") for m in selection.fit_info["members"]],
        "refit_epochs": chosen.get("settings", {}).get("epochs"),  # None: not trained in epochs
        "selection_seconds": round(select_seconds, 1),
        "full_retrain_seconds": round(full_seconds, 2),
        "full_retrain_cpu_seconds": round(full_cpu, 2),
    }
    rng = np.random.default_rng(args.seed + n)
    ids = data.user_ids.cast(pl.Utf8).to_list()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        model.save(base)
        forget_seconds, forget_cpu = [], []
        for repeat in range(args.repeats):
            user = ids[int(rng.integers(len(ids)))]
            began, cpu = time.perf_counter(), time.process_time()
            forget(base, [user], Path(tmp) / f"one-{repeat}", keep_old=True)
            forget_seconds.append(time.perf_counter() - began)
            forget_cpu.append(time.process_time() - cpu)
        wall, spent = statistics.median(forget_seconds), statistics.median(forget_cpu)
        row["forget_one"] = {
            "seconds": [round(s, 2) for s in forget_seconds],
            "cpu_seconds": [round(s, 2) for s in forget_cpu],
            "median_seconds": round(wall, 2),
            "median_cpu_seconds": round(spent, 2),
            "full_over_forget": round(full_seconds / wall, 2),
            "full_over_forget_cpu": round(full_cpu / spent, 2),
        }
        chosen_ids = sorted(rng.choice(len(ids), args.forget, replace=False).tolist())
        forgotten = [ids[i] for i in chosen_ids]
        members = data.histories.take(np.asarray(chosen_ids))
        before = membership_auc(model, members, strangers)
        others = np.setdiff1d(np.arange(len(ids)), chosen_ids)
        trained = membership_auc(model, data.histories.take(others), strangers)
        result = forget(base, forgotten, Path(tmp) / "many", keep_old=True)
        after = membership_auc(result.model, members, strangers)
        row["attack"] = {
            "forgotten_users": len(forgotten),
            "never_seen_users": len(strangers),
            "before": before.to_dict(),
            "after": after.to_dict(),
            "kept_training_users": trained.to_dict(),
            "retrained_shards": len(result.retrained),
            "forget_seconds": round(result.train_seconds, 2),
        }
        shutil.rmtree(tmp, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--shards", default="1,2,4,8")
    parser.add_argument("--set", action="append", default=[], help="member key=value")
    parser.add_argument("--strangers", type=float, default=0.3, help="users never trained on")
    parser.add_argument("--forget", type=int, default=0, help="users forgotten (0: strangers)")
    parser.add_argument("--repeats", type=int, default=3, help="single-user forgets timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    member_fields = get_model_class(args.model).config_class.model_fields
    settings: dict[str, Any] = {"device": "cpu"} if "device" in member_fields else {}
    for assignment in args.set:
        apply_override(settings, assignment)
    dataset = load_dataset(args.data)
    ids = dataset.user_ids.cast(pl.Utf8).to_list()
    rng = np.random.default_rng(args.seed)
    never = sorted(rng.choice(len(ids), round(args.strangers * len(ids)), replace=False))
    data, _ = drop_erased(dataset, [ids[i] for i in never])
    strangers = dataset.histories.take(np.asarray(never))
    args.forget = args.forget or len(never)
    out: dict[str, Any] = {
        "data": args.data,
        "model": args.model,
        "settings": settings,
        "users": dataset.n_users,
        "training_users": data.n_users,
        "never_seen_users": len(never),
        "items": dataset.n_items,
        "events": dataset.n_events,
        "torch_threads": 1,
        "note": "one process, one torch thread, on a shared 2-core machine with other jobs "
        "running: wall seconds are inflated and noisy; cpu_seconds (this process's CPU "
        "time) and their ratios are the comparable figures",
        "runs": [],
    }
    for n in (int(s) for s in args.shards.split(",")):
        out["runs"].append(run_shards(n, args, data, strangers, settings))
        print(json.dumps(out["runs"][-1]), flush=True)
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
