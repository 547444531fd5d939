"""Peak memory against events and items: preprocessing, training, `recommend` and the service.

Two axes of synthetic logs:

- events: ``make_log.py``'s log (Zipf items over ``events / 10``, sessions, behaviours) at
  each ``--events`` size, 5-core;
- items: ``large_catalogue.py``'s log (every item once, the rest Zipf(1.1), users of 50
  events) with ``--items-events`` events and each ``--items`` catalogue size, no k-core.

For each log, every stage runs in a process of its own, so each peak RSS is that stage's:

- preprocess: ``evorec.load_dataset`` into a Parquet cache (seconds, events/s);
- train: the cached dataset reloaded, split leave-one-out, SASRec (dim 64, 50 events,
  batches of 128, sampled softmax with 1,024 shared negatives, the sparse item table)
  built and trained for ``--steps`` optimizer steps (seconds per step), then saved; the peak
  holds the dataset, the split, the model, its optimizer state and the activations, all
  allocated by the first steps (an epoch repeats them);
- recommend: ``evorec recommend --users FILE -k 100 --batch-users 1024 --out recs.parquet``
  over every user, or a uniform sample of ``--recommend-users`` where there are more;
- serve: ``evorec serve --model-dir`` started on an empty store (which it seeds with the
  model's events, so the peak includes that), ``--requests`` GET
  ``/users/{id}/recommendations`` answered (p50/p99 latency beside), peak RSS from the
  process's ``VmHWM``.

    OMP_NUM_THREADS=1 POLARS_MAX_THREADS=1 .venv/bin/python benchmarks/memory_scaling.py \\
        --out benchmarks/results/memory-scaling.json --plot docs/scaling.png
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from large_catalogue import synthetic_log
from make_log import make_log
from recommend_memory import EVOREC, timed

from evorec.io import write_atomic_text

MODEL = {
    "dim": 64,
    "max_len": 50,
    "batch_size": 128,
    "loss": "sampled_softmax",
    "n_negatives": 1024,
    "sparse_items": True,
    "device": "cpu",
}
NO_CORE = {"min_user_events": 1, "min_item_events": 1}
K = 100
READY_TIMEOUT_S = 3600  # seeding an empty store with every event of a 50M-event model


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def preprocess(log: str, cache: str, preprocess_config: dict[str, int] | None) -> dict[str, Any]:
    from evorec import load_dataset

    began = time.perf_counter()
    dataset = load_dataset(log, cache_dir=cache, preprocess_config=preprocess_config)
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "events_per_second": dataset.n_events / seconds,
        "peak_rss_gb": peak_gb(),
        "events": dataset.n_events,
        "users": dataset.n_users,
        "items": dataset.n_items,
    }


def train(
    log: str, cache: str, preprocess_config: dict[str, int] | None, steps: int, out: str
) -> dict[str, Any]:
    import torch

    from evorec import load_dataset
    from evorec.config import SplitConfig
    from evorec.data.split import make_split
    from evorec.models.sasrec import SASRec
    from evorec.training.trainer import SequenceTrainer

    torch.set_num_threads(1)
    dataset = load_dataset(log, cache_dir=cache, preprocess_config=preprocess_config)
    split = make_split(dataset, SplitConfig())
    model = SASRec(MODEL)
    model.seed_rngs()
    model.prepare(split.train, False)
    trainer = SequenceTrainer(model, split.train, None)
    trainer.module.train()
    timed_steps: list[float] = []
    for index, rows in enumerate(trainer.batches()[: steps + 2]):
        began = time.perf_counter()
        loss, _ = trainer.loss(rows)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        if index >= 2:  # warm-up: the first allocations of the moment buffers
            timed_steps.append(time.perf_counter() - began)
    peak = peak_gb()
    model.dataset = split.full
    model.save(out)
    return {
        "steps": len(timed_steps),
        "seconds_per_step": float(np.median(timed_steps)),
        "train_sequences": trainer.examples,
        "peak_rss_gb": peak,
    }


def child(kind: str, **kwargs: Any) -> dict[str, Any]:
    """``kind`` run in a fresh process; its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} {kwargs} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vm_hwm_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no VmHWM for process {pid}")


def serve(model_dir: Path, db: str, users: list[str], requests: int) -> dict[str, Any]:
    """Start the service on ``model_dir`` with a new store at ``db`` (seeded from the
    model's events), answer ``requests`` GETs, read its peak RSS."""
    port = free_port()
    began = time.perf_counter()
    process = subprocess.Popen(
        [EVOREC, "serve", "--model-dir", str(model_dir), "--port", str(port), "--db", db],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"evorec serve exited: {process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                if time.perf_counter() - began > READY_TIMEOUT_S:
                    raise SystemExit("evorec serve did not answer /health in time") from None
                time.sleep(0.5)
        ready = time.perf_counter() - began
        latencies = []
        for user in users[:requests]:
            start = time.perf_counter()
            url = f"{base}/users/{urllib.request.quote(user)}/recommendations?k=10"
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
            latencies.append((time.perf_counter() - start) * 1000)
        peak = vm_hwm_gb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "ready_seconds": ready,
        "requests": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "peak_rss_gb": peak,
    }


def write_log(axis: str, size: int, items_events: int, path: Path) -> int:
    """The ``axis`` log at ``size`` written to ``path`` (freed before any stage runs); its
    number of events."""
    frame = make_log(size) if axis == "events" else synthetic_log(size, items_events - size)
    frame.write_parquet(path)
    return frame.height


def measure(
    axis: str, size: int, preprocess_config: dict[str, int] | None, args: argparse.Namespace
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        log, cache = Path(folder) / "log.parquet", Path(folder) / "cache"
        model_dir = Path(folder) / "model"
        raw_events = write_log(axis, size, args.items_events, log)
        common = {"log": str(log), "cache": str(cache), "preprocess_config": preprocess_config}
        run: dict[str, Any] = {"axis": axis, "raw_events": raw_events}
        run["preprocess"] = child("preprocess", **common)
        print(json.dumps(run), flush=True)
        run["train"] = child("train", **common, steps=args.steps, out=str(model_dir))
        print(json.dumps(run["train"]), flush=True)
        user_ids = pl.read_parquet(model_dir / "dataset" / "user_ids.parquet")["user_id"]
        if len(user_ids) > args.recommend_users:
            user_ids = user_ids.sample(args.recommend_users, seed=0)
        users_file = Path(folder) / "users.txt"
        users_file.write_text("\n".join(map(str, user_ids.to_list())) + "\n")
        recs = Path(folder) / "recs.parquet"
        command = [EVOREC, "recommend", "--model-dir", str(model_dir), "--users", str(users_file)]
        command += ["-k", str(K), "--batch-users", "1024", "--out", str(recs), "--quiet"]
        seconds, peak = timed(command)
        run["recommend"] = {"users": len(user_ids), "seconds": seconds, "peak_rss_gb": peak}
        print(json.dumps(run["recommend"]), flush=True)
        sample = user_ids.sample(min(args.requests, len(user_ids)), seed=1)
        db = f"sqlite:///{Path(folder) / 'events.db'}"
        run["serve"] = serve(model_dir, db, [str(u) for u in sample.to_list()], args.requests)
        print(json.dumps(run["serve"]), flush=True)
    return run


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = ("preprocess", "train", "recommend", "serve")
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    events = [r for r in results["runs"] if r["axis"] == "events"]
    items = [r for r in results["runs"] if r["axis"] == "items"]
    for stage in stages:
        axes[0].plot(
            [r["raw_events"] for r in events],
            [r[stage]["peak_rss_gb"] for r in events],
            marker="o",
            label=stage,
        )
        axes[1].plot(
            [r["preprocess"]["items"] for r in items],
            [r[stage]["peak_rss_gb"] for r in items],
            marker="o",
            label=stage,
        )
    axes[2].plot(
        [r["raw_events"] for r in events],
        [r["preprocess"]["seconds"] for r in events],
        marker="o",
        label="preprocess (s)",
    )
    axes[2].plot(
        [r["raw_events"] for r in events],
        [r["train"]["seconds_per_step"] * 100 for r in events],
        marker="o",
        label="train, 100 steps (s)",
    )
    axes[2].plot(
        [r["raw_events"] for r in events],
        [r["recommend"]["seconds"] for r in events],
        marker="o",
        label="recommend (s)",
    )
    titles = (
        "peak RSS against events (make_log, 5-core)",
        f"peak RSS against items ({results['items_events'] / 1e6:g}M events)",
        "time against events",
    )
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axes[0].set_xlabel("events in the log")
    axes[1].set_xlabel("items in the catalogue")
    axes[2].set_xlabel("events in the log")
    axes[0].set_ylabel("GB")
    axes[2].set_ylabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, nargs="+", default=[1_000_000, 10_000_000, 50_000_000]
    )
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--items-events", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--recommend-users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path, help="results file (required)")
    parser.add_argument("--plot", type=Path, help="write the figure here")
    parser.add_argument("--plot-only", action="store_true", help="redraw --plot from --out")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, payload = args.child
        print(json.dumps({"preprocess": preprocess, "train": train}[kind](**json.loads(payload))))
        return
    if args.out is None:
        parser.error("--out is required")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.plot)
        return
    results: dict[str, Any] = {
        "command": "python benchmarks/memory_scaling.py " + " ".join(sys.argv[1:]),
        "machine": "2 CPU cores, one torch and one Polars thread; a training benchmark ran "
        "on the other core, so times are indicative and memory is what is measured",
        "model": MODEL,
        "items_events": args.items_events,
        "runs": [],
    }
    # the largest log last: whatever it costs, the smaller runs are saved before it
    plan = sorted(
        [("events", n, None) for n in args.events] + [("items", n, NO_CORE) for n in args.items],
        key=lambda run: run[0] == "events" and run[1] == max(args.events),
    )
    for axis, size, config in plan:
        results["runs"].append(measure(axis, size, config, args))
        write_atomic_text(args.out, json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
