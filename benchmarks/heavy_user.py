"""One heavy user against everyone else: recommendation and history latency for a user
holding ``--events`` stored events, and ``/health`` latency while that user's
recommendations are in flight.

The model: a small SASRec (``max_len`` 50) trained on simulated users. The store (SQLite,
a fresh file) gets ``--events`` events of one user through the store's bulk path before the
server starts; the server runs as a separate process (``python -m evorec.cli.main serve``)
on 127.0.0.1. Measured, with httpx from this process:

- ``health_idle_ms``: ``GET /health`` with nothing else in flight (median of 20);
- ``heavy_recommendation_ms``: ``GET /users/heavy/recommendations`` (median of
  ``--requests``, sent one after another);
- ``health_during_ms``: ``GET /health`` polled every 20 ms by a second thread while those
  recommendation requests run (median and maximum);
- ``history_ms`` and ``history_bytes``: one ``GET /users/heavy/history`` as the service
  answers it by default (the whole history, or its first page).

    python benchmarks/heavy_user.py --work runs/heavy-user --out benchmarks/results/heavy_user.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import torch

import evorec
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.serving.server import running_server
from evorec.store import EventStore

HEAVY = "heavy"


def build_model(work: Path) -> Path:
    path = work / "sasrec"
    if (path / "evorec-model.json").is_file():
        return path
    torch.set_num_threads(1)
    sim = simulate(n_users=300, n_items=200, n_topics=8, seed=0)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    evorec.SASRec(epochs=3, dim=32, max_len=50, device="cpu").fit(data).save(path)
    return path


def fill_store(db: str, model_dir: Path, events: int) -> None:
    """``events`` events of the heavy user over the model's items, one bulk insert."""
    items = evorec.load_model(model_dir).dataset.item_ids.cast(pl.Utf8).to_numpy()
    rng = np.random.default_rng(0)
    frame = pl.DataFrame(
        {
            "user_id": [HEAVY] * events,
            "item_id": items[rng.integers(0, len(items), events)],
            "timestamp": np.arange(events, dtype=np.int64),
        }
    )
    store = EventStore(db)
    began = time.perf_counter()
    store.add_events(frame)
    print(f"stored {events:,} events of one user in {time.perf_counter() - began:.1f}s")
    store.close()


def timed(client: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    began = time.perf_counter()
    response = client.get(path)
    return (time.perf_counter() - began) * 1000, response


def measure(url: str, requests: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=120) as client:
        idle = [timed(client, "/health")[0] for _ in range(20)]

        during: list[float] = []
        busy = threading.Event()
        done = threading.Event()

        def poll_health() -> None:
            with httpx.Client(base_url=url, timeout=120) as health:
                busy.wait()
                while not done.is_set():
                    during.append(timed(health, "/health")[0])
                    time.sleep(0.02)

        poller = threading.Thread(target=poll_health)
        poller.start()
        heavy = []
        busy.set()
        try:
            for _ in range(requests):
                elapsed, response = timed(client, f"/users/{HEAVY}/recommendations")
                assert response.status_code == 200, response.text
                heavy.append(elapsed)
        finally:
            done.set()
            poller.join()
        history_ms, response = timed(client, f"/users/{HEAVY}/history")
        assert response.status_code == 200, response.text
    return {
        "health_idle_ms": float(np.median(idle)),
        "heavy_recommendation_ms": float(np.median(heavy)),
        "health_during_ms": {"median": float(np.median(during)), "max": float(np.max(during))},
        "health_probes_during": len(during),
        "history_ms": history_ms,
        "history_bytes": len(response.content),
        "history_events_returned": len(response.json()["events"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/heavy-user"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heavy_user.json"))
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--label", default="after", help="key of this run in --out")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.work)
    db_file = args.work / "events.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    db = f"sqlite:///{db_file}"
    fill_store(db, model_dir, args.events)
    with running_server(model_dir, db, log=args.work / "server.log") as server:
        result = measure(server.url, args.requests)
    result |= {"events": args.events, "requests": args.requests}
    print(json.dumps(result, indent=2))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out} under {args.label!r}")


if __name__ == "__main__":
    main()
