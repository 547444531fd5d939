"""`evorec serve` under load: recommendation latency and throughput over a 1M-item
catalogue through the HNSW index, and event ingest.

The model: SASRec trained on simulated drifting users (``evorec.data.simulate``), whose
item table is then grown to ``--items`` items: the trained items first, then synthetic
items drawn as a Gaussian mixture around them (a trained item's vector plus noise of
``--noise`` x the per-dimension spread of the trained vectors), with new item ids. The
service retrieves over all of them with the faiss HNSW index (``kind: auto`` picks HNSW
above 100,000 items), built once and saved in the model directory.

The server runs as a separate process (``python -m evorec.cli.main serve``) on 127.0.0.1
with an SQLite store; this process is the client (asyncio + httpx). Requests arrive at a
fixed rate (open loop: each request is due at ``start + n / rate`` and its latency is
counted from then, so a slow server cannot slow the arrivals), for ``--seconds`` per rate,
``GET /users/{id}/recommendations?k=10`` over random users. ``GET /health`` at the same
rate is the floor the ratios are printed against. The maximum sustained rate is the highest
step with zero errors whose completions keep up with the arrivals (>= 95%).

Ingest: ``--clients`` concurrent clients post batches of ``--batch`` events to
``POST /events`` for ``--ingest-seconds``; afterwards the store must hold exactly the
acknowledged events.

``--workers 1,2`` repeats the whole measurement for each number of uvicorn worker processes
(``serve --workers N``) and prints the maximum sustained rate, CPU per request and ingest
rate against the first; server CPU is summed over the server's processes.

    python benchmarks/serve_load.py --work runs/serve-bench --out benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import torch

import evorec
from evorec.data.dataset import Dataset
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.models.sequential import SequentialRecommender
from evorec.retrieval import load_or_build_index
from evorec.serving.server import running_server
from evorec.store import EventStore
from evorec.training.incremental import UpdateConfig, grow


def build_model(work: Path, items: int, users: int, epochs: int, noise: float) -> Path:
    """Train SASRec on simulated users, grow its item table to ``items``, save it and its
    HNSW index (kept across runs with the same settings)."""
    path = work / f"sasrec-{items}"
    if (path / "evorec-model.json").is_file():
        return path
    sim = simulate(n_users=users, n_items=2000, n_topics=20, seed=0)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    began = time.perf_counter()
    model = evorec.SASRec(epochs=epochs, dim=64, max_len=50, device="cpu").fit(data)
    print(f"trained SASRec on {data.n_users} users, {data.n_items} items in "
          f"{time.perf_counter() - began:.0f}s")  # fmt: skip
    assert isinstance(model, SequentialRecommender) and model.dataset is not None
    real = model.item_vectors()
    grow(model, items, UpdateConfig())
    rng = np.random.default_rng(0)
    extra = items - len(real)
    centres = rng.integers(0, len(real), extra)
    synthetic = real[centres] + noise * real.std(0) * rng.standard_normal((extra, real.shape[1]))
    with torch.no_grad():
        model.network.item_embedding.weight[len(real) + 1 :] = torch.from_numpy(synthetic)
    first = int(model.dataset.item_ids.max()) + 1
    ids = pl.concat([model.dataset.item_ids, pl.Series(np.arange(first, first + extra))])
    model.dataset = model.dataset.replace(item_ids=ids, items=None, users=None, meta={})
    model.save(path)
    began = time.perf_counter()
    load_or_build_index(path, np.ascontiguousarray(model.item_vectors(), np.float32))
    print(f"HNSW index over {items:,} items built in {time.perf_counter() - began:.0f}s")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants so far (Linux
    ``/proc``; a descendant that has exited no longer counts)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child)) for child in children)


async def fixed_rate(
    url: str, paths: list[str], rate: float, seconds: float, connections: int, pid: int
) -> dict[str, Any]:
    """Requests for ``paths`` (cycled) due at ``start + n / rate`` for ``seconds``, over at
    most ``connections`` keep-alive connections (a request due while all are busy waits,
    and its wait counts in its latency)."""
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    pool = httpx.Timeout(10, pool=None)  # waiting for a connection is latency, not an error
    async with httpx.AsyncClient(base_url=url, timeout=pool, limits=limits) as client:

        async def one(n: int, due: float) -> None:
            nonlocal errors
            try:
                response = await client.get(paths[n % len(paths)])
                if response.status_code != 200:
                    errors += 1
                    return
            except httpx.HTTPError:
                errors += 1
                return
            latencies[n] = time.perf_counter() - due

        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        tasks = []
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(pid) - cpu
    done = latencies[np.isfinite(latencies)]
    return {
        "rate": rate,
        "requests": total,
        "errors": errors,
        "achieved": len(done) / elapsed,
        "p50_ms": float(np.percentile(done, 50) * 1000) if len(done) else None,
        "p99_ms": float(np.percentile(done, 99) * 1000) if len(done) else None,
        "server_cpu_ms_per_request": cpu * 1000 / max(len(done), 1),
    }


async def ingest(
    url: str, clients: int, batch: int, seconds: float, item_ids: list[Any]
) -> dict[str, Any]:
    """``clients`` loops posting ``batch`` events each; counts acknowledged events."""
    acknowledged = 0
    errors = 0
    rng = np.random.default_rng(1)
    stop = time.perf_counter() + seconds

    async def client_loop(c: int) -> None:
        nonlocal acknowledged, errors
        n = 0
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while time.perf_counter() < stop:
                items = rng.choice(len(item_ids), batch)
                body = [
                    {
                        "user_id": f"ingest-{c}-{(n * batch + e) % 5000}",
                        "item_id": str(item_ids[i]),
                        "timestamp": 1_800_000_000 + n,
                    }
                    for e, i in enumerate(items)
                ]
                n += 1
                try:
                    response = await client.post("/events", json=body)
                except httpx.HTTPError:
                    errors += 1
                    continue
                if response.status_code == 201:
                    acknowledged += response.json()["ingested"]
                else:
                    errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    elapsed = time.perf_counter() - began
    return {"acknowledged": acknowledged, "errors": errors, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="model and store directory")
    parser.add_argument("--out", type=Path, help="results JSON")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5000, help="simulated users")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=30, help="per rate")
    parser.add_argument("--rates", default="200,300,400,600,800,1000,1300,1600")
    parser.add_argument("--connections", type=int, default=64, help="client connections")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--ingest-seconds", type=float, default=30)
    parser.add_argument(
        "--workers", default="1", help="serve worker processes, one run each: e.g. 1,2"
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"load average {load:.2f}"
        + ("  (busy machine: numbers are not final)" if load > 1.5 else "")
    )
    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.work, args.items, args.users, args.epochs, args.noise)
    dataset = evorec.load_model(model_dir).dataset
    assert dataset is not None
    results: dict[str, Any] = {"items": dataset.n_items, "users": dataset.n_users, "load": load}
    runs: dict[str, dict[str, Any]] = {}
    for workers in (int(w) for w in args.workers.split(",")):
        print(f"-- {workers} worker process{'es' if workers > 1 else ''}")
        runs[str(workers)] = measure(model_dir, dataset, workers, args)
    results["workers"] = runs
    base_workers, base = next(iter(runs.items()))
    for workers, run in list(runs.items())[1:]:
        cpu, base_cpu = (r["steps"][0]["server_cpu_ms_per_request"] for r in (run, base))
        ingest, base_ingest = (r["ingest"]["events_per_second"] for r in (run, base))
        sustained = (
            f"{run['max_sustained'] / base['max_sustained']:.2f}x"
            if base["max_sustained"]
            else f"{run['max_sustained']:.0f} req/s against none"
        )
        print(
            f"{workers} vs {base_workers} workers: max sustained rate {sustained}, server CPU "
            f"per request at {run['steps'][0]['rate']:.0f} req/s {cpu / base_cpu:.2f}x, ingest "
            f"{ingest / base_ingest:.2f}x"
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.out)


def measure(
    model_dir: Path, dataset: Dataset, workers: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Latency steps, maximum sustained rate and ingest of one server configuration."""
    db_file = args.work / f"events-{time.time_ns()}.db"
    db = f"sqlite:///{db_file}"
    results: dict[str, Any] = {}
    log = args.work / "server.log"
    try:
        with running_server(model_dir, db, log=log, workers=workers, timeout=600) as server:
            url, pid = server.url, server.process.pid
            users = np.random.default_rng(0).permutation(dataset.user_ids.to_numpy())
            paths = [f"/users/{u}/recommendations?k=10" for u in users]
            asyncio.run(fixed_rate(url, paths[:200], 50, 2, args.connections, pid))  # warm-up
            rates = [float(r) for r in args.rates.split(",")]
            floor = asyncio.run(
                fixed_rate(url, ["/health"], rates[0], args.seconds, args.connections, pid)
            )
            steps = []
            for rate in rates:
                step = asyncio.run(
                    fixed_rate(url, paths, rate, args.seconds, args.connections, pid)
                )
                steps.append(step)
                print(json.dumps(step))
                if step["errors"] or step["achieved"] < 0.95 * rate:
                    break
            first = steps[0]
            sustained = [
                s["rate"] for s in steps if not s["errors"] and s["achieved"] >= 0.95 * s["rate"]
            ]
            results.update(health=floor, steps=steps, max_sustained=max(sustained, default=0.0))
            print(
                f"recommendations at {first['rate']:.0f} req/s: p50 {first['p50_ms']:.1f} ms "
                f"({first['p50_ms'] / floor['p50_ms']:.1f}x /health), p99 {first['p99_ms']:.1f} ms "
                f"({first['p99_ms'] / floor['p99_ms']:.1f}x /health); /health p50 "
                f"{floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms; server CPU per request "
                f"{first['server_cpu_ms_per_request']:.2f} ms "
                f"({floor['server_cpu_ms_per_request']:.2f} ms /health)"
            )
            best = results["max_sustained"]
            print(f"max sustained recommendation rate (zero errors): {best:.0f} req/s")

            store = EventStore(db)
            before = store.count()
            item_ids = dataset.item_ids.to_list()
            run = asyncio.run(ingest(url, args.clients, args.batch, args.ingest_seconds, item_ids))
            stored = store.count() - before
            store.close()
            run.update(stored=stored, events_per_second=run["acknowledged"] / run["seconds"])
            results["ingest"] = run
            print(
                f"ingest: {run['events_per_second']:,.0f} events/s acknowledged "
                f"({run['acknowledged']:,} in {run['seconds']:.1f}s, {args.clients} clients x "
                f"{args.batch} events), {stored:,} stored, {run['errors']} errors"
            )
            if stored < run["acknowledged"]:
                raise SystemExit("an acknowledged event is missing from the store")
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    return results


if __name__ == "__main__":
    main()
