"""Soak: `evorec serve` under a steady mixed load, its resident memory sampled throughout.

A small SASRec (simulated drifting users) is trained and served from a separate process
(``python -m evorec.cli.main serve``) on 127.0.0.1 with an SQLite store. This process sends,
for ``--seconds``, rounds of: a batch of events for a random user (``POST /events``, with
an idempotency key), that user's recommendations, a page of their history, and
recommendations for a raw history (``POST /recommendations``), at most ``--rate`` rounds a
second. The server's RSS (``/proc/<pid>/status``) is read every ``--sample`` seconds; the
report gives the first, last and largest sample, the growth over the second half (MB per
minute, least squares), the request count and every non-2xx status.

    python benchmarks/soak.py --work runs/soak --seconds 300 --out benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.io import write_atomic_text
from evorec.models import SASRec
from evorec.serving.server import running_server


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=50, help="rounds per second, at most")
    parser.add_argument("--sample", type=float, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sim = simulate(n_users=2000, n_items=1000, seed=0)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    model_dir = (
        SASRec(epochs=2, dim=32, max_len=50, device="cpu").fit(data).save(args.work / "model")
    )
    db = f"sqlite:///{args.work / 'events.db'}"
    (args.work / "events.db").unlink(missing_ok=True)
    users = [str(u) for u in data.user_ids.to_list()]
    items = [str(i) for i in data.item_ids.to_list()]
    rng = np.random.default_rng(0)
    statuses: Counter[str] = Counter()
    samples: list[tuple[float, float]] = []
    rounds = 0
    with (
        running_server(model_dir, db, log=args.work / "server.log") as running,
        httpx.Client(base_url=running.url, timeout=10) as http,
    ):
        server = running.process
        began = time.monotonic()
        next_sample = began
        while (now := time.monotonic()) - began < args.seconds:
            if now >= next_sample:
                samples.append((now - began, rss_mb(server.pid)))
                next_sample += args.sample
            user = users[int(rng.integers(len(users)))]
            stamp = 2_000_000_000 + rounds
            batch = [
                {"user_id": user, "item_id": items[int(rng.integers(len(items)))],
                 "timestamp": stamp}
                for _ in range(5)
            ]  # fmt: skip
            key = {"Idempotency-Key": uuid.uuid4().hex}
            replies = [
                http.post("/events", json=batch, headers=key),
                http.get(f"/users/{user}/recommendations", params={"k": 10}),
                http.get(f"/users/{user}/history", params={"limit": 100}),
                http.post(
                    "/recommendations",
                    json={"items": [e["item_id"] for e in batch], "k": 10},
                ),
            ]
            for reply in replies:
                statuses[str(reply.status_code)] += 1
            rounds += 1
            time.sleep(max(0.0, began + rounds / args.rate - time.monotonic()))
        samples.append((time.monotonic() - began, rss_mb(server.pid)))
    times, rss = np.array(samples).T
    half = times >= times[-1] / 2
    slope = float(np.polyfit(times[half], rss[half], 1)[0] * 60) if half.sum() > 1 else 0.0
    results: dict[str, Any] = {
        "seconds": float(times[-1]),
        "rounds": rounds,
        "requests": sum(statuses.values()),
        "statuses": dict(statuses),
        "rss_mb": {"first": rss[0], "last": rss[-1], "max": float(rss.max())},
        "rss_growth_second_half_mb_per_minute": slope,
        "samples": samples,
    }
    errors = sum(n for status, n in statuses.items() if not status.startswith("2"))
    print(
        f"{results['requests']:,} requests in {times[-1]:.0f} s ({errors} not 2xx); RSS "
        f"{rss[0]:.0f} -> {rss[-1]:.0f} MB (max {rss.max():.0f}), second half "
        f"{slope:+.2f} MB/min"
    )
    if args.out:
        write_atomic_text(args.out, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
