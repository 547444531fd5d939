"""Peak memory of `evorec recommend --all-users --out FILE` against the batch size.

For each synthetic log (`make_log.py`: Zipf items, sessions, behaviours), a SASRec is
trained for one epoch (its accuracy does not matter here; validated and tested on 2,000
sampled users), then the top 100 of every user
is written to Parquet with ``--batch-users`` 1,024 and 8,192, and in one batch holding every
user (the in-memory path) where its score matrix (users × items × 4 bytes) fits in
``--max-gb``. Each command runs in a process of its own, measured by ``/usr/bin/time``.

    .venv/bin/python benchmarks/recommend_memory.py --events 1000000 3000000 \\
        --out benchmarks/results/recommend-memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from make_log import make_log, write_log

from evorec.io import write_atomic_text
from evorec.models.base import Recommender

EVOREC = str(Path(sys.executable).parent / "evorec")
BATCHES = (1024, 8192)
K = 100


def timed(command: list[str]) -> tuple[float, float]:
    """Seconds and peak RSS (GB) of ``command``, which must succeed."""
    began = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return seconds, int(done.stderr.strip().splitlines()[-1]) / 2**20


def measure(events: int, max_gb: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        log, model_dir = Path(folder) / "log.parquet", Path(folder) / "model"
        write_log(make_log(events), log)
        train = [EVOREC, "train", "--data", str(log), "--model", "sasrec", "--out", str(model_dir)]
        train += [
            "--set",
            "epochs=1",
            "--set",
            "valid_users=2000",
            "--set",
            "evaluation.users=2000",
        ]
        train += ["--no-refit", "--quiet"]
        train_seconds, train_gb = timed(train)
        dataset = Recommender.load(model_dir).fitted_dataset()
        users, items = dataset.n_users, dataset.n_items
        runs = []
        for batch in (*BATCHES, users):
            matrix_gb = min(batch, users) * items * 4 / 2**30
            if matrix_gb > max_gb:
                runs.append({"batch_users": batch, "skipped": f"score matrix {matrix_gb:.1f} GB"})
                continue
            out = Path(folder) / f"recs-{batch}.parquet"
            command = [EVOREC, "recommend", "--model-dir", str(model_dir), "--all-users"]
            command += ["-k", str(K), "--batch-users", str(batch), "--out", str(out), "--quiet"]
            seconds, peak = timed(command)
            rows = pl.scan_parquet(out).select(pl.len()).collect().item()
            runs.append(
                {"batch_users": batch, "seconds": seconds, "peak_rss_gb": peak, "rows": rows}
            )
            print(json.dumps({"events": events, **runs[-1]}), flush=True)
    return {
        "events": events,
        "users": users,
        "items": items,
        "train_one_epoch": {"seconds": train_seconds, "peak_rss_gb": train_gb},
        "recommend": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--max-gb", type=float, default=8.0, help="largest score matrix run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {
        "command": "python benchmarks/recommend_memory.py " + " ".join(sys.argv[1:]),
        "machine": f"2 CPU cores, {pl.thread_pool_size()} Polars thread(s)",
        "k": K,
        "logs": [measure(events, args.max_gb) for events in args.events],
    }
    write_atomic_text(args.out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
