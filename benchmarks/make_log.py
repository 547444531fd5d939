"""A synthetic interaction log at any size, and the preprocessing scaling run over it.

The log: users with Poisson(20)-many events on average, in sessions (a new session after
10% of events, hours apart; events within a session about a minute apart, real Unix
times over 2023), items Zipf(1.1)-distributed over a catalogue of ``events / 10`` items (a
random item order, so popularity is not the id order), behaviours view/cart/fav/buy at
89/6/3/2%. Written as Parquet or CSV (``user_id, item_id, timestamp, behavior``).

    .venv/bin/python benchmarks/make_log.py --events 10000000 --write /tmp/log-10m.parquet
    .venv/bin/python benchmarks/make_log.py --events 1000000 10000000 \\
        --measure benchmarks/results/preprocess-scaling.json

``--measure`` writes each log to a temporary folder, then reads and preprocesses it through
``evorec.load_dataset`` (no cache, 5-core) in a process of its own: seconds, events/s and
the peak RSS of that process, and the same for a cached reload. With ``--stage info`` it
times ``evorec data info --data LOG`` instead (the statistics of the raw log), its peak
RSS from ``/usr/bin/time``:

    .venv/bin/python benchmarks/make_log.py --events 1000000 10000000 50000000 --stage info \
        --measure benchmarks/results/data-info-scaling.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

BEHAVIORS = np.array(["view", "cart", "fav", "buy"])
BEHAVIOR_SHARES = [0.89, 0.06, 0.03, 0.02]
START = 1_672_531_200  # 2023-01-01 UTC


def make_log(events: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_users = max(1, events // 20)
    n_items = max(1, events // 10)
    users = np.sort(rng.integers(n_users, size=events))
    ranks = np.empty(0, dtype=np.int64)
    while len(ranks) < events:  # Zipf ranks beyond the catalogue are drawn again
        draw = rng.zipf(1.1, size=events)
        ranks = np.concatenate([ranks, draw[draw <= n_items]])
    items = rng.permutation(n_items)[ranks[:events] - 1]
    new_session = rng.random(events) < 0.1
    gaps = np.where(
        new_session, rng.exponential(6 * 3600, events), rng.exponential(60, events)
    ).astype(np.int64)
    first = np.r_[True, users[1:] != users[:-1]]
    starts = np.flatnonzero(first)
    gaps[first] = rng.integers(0, 300 * 86400, size=len(starts))  # each user's first event
    elapsed = np.cumsum(gaps)
    # each user's times: the running sum of their own gaps
    base = np.repeat(elapsed[starts] - gaps[starts], np.diff(np.r_[starts, events]))
    timestamps = START + elapsed - base
    behaviors = BEHAVIORS[rng.choice(len(BEHAVIORS), size=events, p=BEHAVIOR_SHARES)]
    return pl.DataFrame(
        {"user_id": users, "item_id": items, "timestamp": timestamps, "behavior": behaviors}
    )


def write_log(frame: pl.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)


def measure(path: Path) -> dict[str, Any]:
    """Read + preprocess ``path`` through evorec.load_dataset, then a cached reload (run in
    a process of its own: its peak RSS is the preprocessing's)."""
    import torch

    from evorec import load_dataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as cache:
        began = time.perf_counter()
        dataset = load_dataset(path, cache_dir=cache)
        seconds = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        began = time.perf_counter()
        load_dataset(path, cache_dir=cache)
        cached = time.perf_counter() - began
    return {
        "seconds": seconds,
        "peak_rss_gb": peak,
        "cached_reload_seconds": cached,
        "events_after": dataset.n_events,
        "users_after": dataset.n_users,
        "items_after": dataset.n_items,
    }


def measure_child(path: Path) -> dict[str, Any]:
    """:func:`measure` in a process of its own."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout)


def measure_info(path: Path) -> dict[str, Any]:
    """Seconds and peak RSS of ``evorec data info --data path``."""
    evorec = str(Path(sys.executable).parent / "evorec")
    began = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", evorec, "data", "info", "--data", str(path)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return {
        "seconds": seconds,
        "peak_rss_gb": int(done.stderr.strip().splitlines()[-1]) / 2**20,
        "summary": done.stdout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--write", type=Path, help="write one log here (.parquet or .csv)")
    parser.add_argument("--measure", type=Path, help="results file of the scaling run")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    parser.add_argument("--stage", choices=["preprocess", "info"], default="preprocess")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    if args.write:
        write_log(make_log(args.events[0]), args.write)
        return
    if not args.measure:
        parser.error("give --write PATH or --measure RESULTS")
    runs = []
    for events in args.events:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"log.{args.format}"
            write_log(make_log(events), path)
            run = {"events": events, "format": args.format, "stage": args.stage}
            run.update(measure_info(path) if args.stage == "info" else measure_child(path))
            run["events_per_second"] = events / run["seconds"]
            print(json.dumps(run), flush=True)
            runs.append(run)
    from evorec.io import write_atomic_text

    results = {
        "command": "python benchmarks/make_log.py " + " ".join(sys.argv[1:]),
        "machine": f"2 CPU cores, {pl.thread_pool_size()} Polars thread(s), one torch thread",
        "runs": runs,
    }
    write_atomic_text(args.measure, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
