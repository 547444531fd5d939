"""`evorec train` end to end on a 10M-event log with a 1M-item catalogue, one epoch, whole.

The log is ``large_catalogue.py``'s (every item once, the rest of the events Zipf(1.1), users
of 50 events, one event a second), written to Parquet. One `evorec train` command in a
process of its own reads and preprocesses it (no k-core, so every item stays), trains
SASRec for one whole epoch with sampled softmax (1,024 shared popularity-sampled negatives,
logQ) and the row-wise sparse item table, validates and tests on sampled users (full
ranking over every item, with a 95% confidence interval) and saves the model; the wall
time and peak RSS come from ``/usr/bin/time``, the epoch time from the model's fit info.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_big_log.py \\
        --out benchmarks/results/train-10m-1m-items.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from large_catalogue import synthetic_log
from recommend_memory import EVOREC, timed

from evorec.io import write_atomic_text
from evorec.models.base import Recommender

SETTINGS = {
    "model.dim": 64,
    "model.max_len": 50,
    "model.batch_size": 128,
    "model.loss": "sampled_softmax",
    "model.n_negatives": 1024,
    "model.sparse_items": "true",
    "model.epochs": 1,
    "model.device": "cpu",
    "data.preprocess.min_user_events": 1,
    "data.preprocess.min_item_events": 1,
}


def measure(events: int, items: int, eval_users: int, folder: Path) -> dict[str, Any]:
    log, model_dir = folder / "log.parquet", folder / "model"
    began = time.perf_counter()
    synthetic_log(items, zipf_events=events - items).write_parquet(log)
    write_seconds = time.perf_counter() - began
    settings = {
        **SETTINGS,
        "model.valid_users": eval_users,
        "evaluation.users": eval_users,
    }
    command = [EVOREC, "train", "--data", str(log), "--model", "sasrec", "--out", str(model_dir)]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    command += ["--no-refit", "--quiet"]
    seconds, peak_gb = timed(command)
    model = Recommender.load(model_dir)
    dataset = model.fitted_dataset()
    metrics = json.loads((model_dir / "metrics.json").read_text())
    info = model.fit_info
    return {
        "log": {"events": events, "items": items, "write_seconds": write_seconds},
        "dataset": {
            "events": dataset.n_events,
            "users": dataset.n_users,
            "items": dataset.n_items,
        },
        "settings": settings,
        "command_seconds": seconds,
        "peak_rss_gb": peak_gb,
        "epoch_seconds": info["seconds_per_epoch"],
        "fit_info": info,
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--eval-users", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = measure(args.events, args.items, args.eval_users, Path(folder))
    results = {
        "command": "python benchmarks/train_big_log.py " + " ".join(sys.argv[1:]),
        "machine": "2 CPU cores, one torch thread (OMP_NUM_THREADS=1); "
        "other jobs ran on the second core",
        **run,
    }
    write_atomic_text(args.out, json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({k: results[k] for k in ("command_seconds", "peak_rss_gb", "epoch_seconds")}))


if __name__ == "__main__":
    main()
