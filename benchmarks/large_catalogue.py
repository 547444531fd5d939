"""Big item tables on one machine: dense AdamW vs row-wise sparse updates (``sparse_items``).

Speed: SASRec with sampled softmax (shared popularity-sampled negatives, logQ) on a
synthetic log whose catalogue has 100k or 1M items (every item once, the rest of the events
Zipf-distributed); each configuration runs in its own process (peak RSS is its own), times
``--steps`` optimizer steps after two warm-up steps and reports sequences/s, the epoch time
of the synthetic log and of a 10M-event log at that rate (extrapolated), and peak RSS.

Accuracy: on a real dataset (ml-latest-small by default) SASRec with full softmax, sampled
softmax with the dense table and sampled softmax with ``sparse_items``, leave-one-out,
epochs chosen on validation NDCG@10, test NDCG@10/HR@10, per seed.

    .venv/bin/python benchmarks/large_catalogue.py --out benchmarks/results/large-catalogue.json

``--items`` with no sizes runs the accuracy part alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from evorec.config import load_run_config
from evorec.data.load import from_frame
from evorec.io import write_atomic_text
from evorec.models import get_model_class
from evorec.models.sequential import SequentialRecommender
from evorec.training.pipeline import train
from evorec.training.trainer import SequenceTrainer

MODEL = {"dim": 64, "max_len": 50, "batch_size": 128, "loss": "sampled_softmax", "device": "cpu"}
EVENTS_PER_USER = 50
TARGET_EVENTS = 10_000_000  # the log: epoch time extrapolated at the measured rate


def synthetic_log(n_items: int, zipf_events: int, seed: int = 0) -> pl.DataFrame:
    """Every item once, then ``zipf_events`` Zipf(1.1) events, in users of 50 events."""
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.1, size=zipf_events * 2)
    zipf = ranks[ranks <= n_items][:zipf_events] - 1
    items = np.concatenate([rng.permutation(n_items), rng.permutation(n_items)[zipf]])
    rng.shuffle(items)
    users = np.arange(len(items)) // EVENTS_PER_USER
    return pl.DataFrame({"user_id": users, "item_id": items, "timestamp": np.arange(len(items))})


def measure_speed(
    n_items: int,
    sparse: bool,
    steps: int,
    negatives: int,
    model: str = "sasrec",
    device: str = "cpu",
    amp: bool = False,
) -> dict[str, Any]:
    """One configuration (run in a process of its own)."""
    if device == "cpu":
        torch.set_num_threads(1)
    began = time.perf_counter()
    data = from_frame(
        synthetic_log(n_items, zipf_events=n_items),
        preprocess_config={"min_user_events": 1, "min_item_events": 1},
    )
    build_seconds = time.perf_counter() - began
    settings = {"n_negatives": negatives, "sparse_items": sparse, "device": device, "amp": amp}
    recommender = get_model_class(model)({**MODEL, **settings})
    assert isinstance(recommender, SequentialRecommender)
    recommender.seed_rngs()
    recommender.prepare(data, False)
    trainer = SequenceTrainer(recommender, data, None)
    autocast = torch.autocast(trainer.device.type, torch.bfloat16, enabled=trainer.settings.amp)
    trainer.module.train()
    batches = trainer.batches()
    timed: list[float] = []
    sequences = 0
    for index, rows in enumerate(batches[: steps + 2]):
        start = time.perf_counter()
        with autocast:
            loss, _ = trainer.loss(rows)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:  # warm-up: first allocations of the moment buffers
            timed.append(time.perf_counter() - start)
            sequences += len(rows)
    rate = sequences / sum(timed)
    return {
        "model": model,
        "device": str(trainer.device),
        "bf16": trainer.settings.amp,
        "peak_device_memory_gb": (
            torch.cuda.max_memory_allocated() / 2**30 if trainer.device.type == "cuda" else None
        ),
        "items": data.n_items,
        "events": data.n_events,
        "sparse_items": sparse,
        "n_negatives": negatives,
        "timed_steps": len(timed),
        "seconds_per_step": float(np.median(timed)),
        "sequences_per_second": rate,
        "train_sequences": trainer.examples,
        "epoch_seconds_extrapolated": trainer.examples / rate,
        "epoch_minutes_10m_events_extrapolated": TARGET_EVENTS / EVENTS_PER_USER / rate / 60,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "data_build_seconds": build_seconds,
    }


def measure_scoring(n_items: int, dim: int, batch: int, k: int, device: str) -> dict[str, Any]:
    """Exact top-``k`` of ``batch`` queries against ``n_items`` x ``dim`` float32 item
    vectors (matmul + top-k, the exact path's kernels) on ``device``: queries/s and the rate
    at which the item matrix is read, beside a device-to-device copy's bandwidth."""
    if device == "cpu":
        torch.set_num_threads(1)
    target = torch.device(device)
    generator = torch.Generator(device=target).manual_seed(0)
    items = torch.randn(n_items, dim, device=target, generator=generator)
    queries = torch.randn(batch, dim, device=target, generator=generator)

    def sync() -> None:
        if target.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn: Any, repeats: int) -> float:
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
        return (time.perf_counter() - start) / repeats

    repeats = 20 if target.type == "cuda" else 3
    seconds = timed(lambda: torch.topk(queries @ items.T, k, dim=1), repeats)
    source = torch.empty(2**28, device=target)  # 1 GiB
    copy = torch.empty_like(source)
    copy_seconds = timed(lambda: copy.copy_(source), repeats)
    return {
        "device": str(target),
        "items": n_items,
        "dim": dim,
        "batch": batch,
        "k": k,
        "queries_per_second": batch / seconds,
        "item_matrix_gb_per_second": items.numel() * 4 / seconds / 1e9,
        "copy_gb_per_second": 2 * source.numel() * 4 / copy_seconds / 1e9,  # read + write
    }


def measure_accuracy(data: str, seed: int, variant: str, negatives: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    loss = "softmax" if variant == "softmax" else "sampled_softmax"
    overrides = [
        f"data.path={data}",
        "model.name=sasrec",
        "model.dim=64",
        "model.max_len=50",
        "model.train_on=last",
        "model.epochs=60",
        "model.patience=5",
        "model.device=cpu",
        f"model.seed={seed}",
        f"model.loss={loss}",
        f"model.n_negatives={negatives}",
        f"model.sparse_items={'true' if variant == 'sampled-sparse' else 'false'}",
    ]
    result = train(load_run_config(None, overrides))
    info = result.model.fit_info
    return {
        "variant": variant,
        "seed": seed,
        "test": {k: result.test.metrics[k] for k in ("NDCG@10", "HR@10")},
        "best_valid_ndcg10": info["best_valid"].get("NDCG@10"),
        "best_epoch": info["best_epoch"],
        "seconds_per_epoch": info["seconds_per_epoch"],
        "items": result.split.full.n_items,
    }


def _child(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in sorted({r["variant"] for r in runs}):
        values = [r["test"]["NDCG@10"] for r in runs if r["variant"] == variant]
        out[variant] = {
            "test_ndcg10_mean": float(np.mean(values)),
            "test_ndcg10_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "seeds": len(values),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/large-catalogue.json"))
    parser.add_argument(
        "--items", type=int, nargs="*", default=[100_000, 1_000_000], help="none: no speed runs"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--negatives", type=int, default=1024)
    parser.add_argument("--data", default="../shared/datasets/ml-latest-small")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--accuracy-negatives", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["sasrec"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument(
        "--scoring", action="store_true", help="also exact top-k of 1M x 64 item vectors"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, payload = args.child
        fn = {"speed": measure_speed, "scoring": measure_scoring}.get(kind, measure_accuracy)
        print(json.dumps(fn(**json.loads(payload))))
        return
    speed: list[dict[str, Any]] = []
    scoring: list[dict[str, Any]] = []
    accuracy: list[dict[str, Any]] = []

    def save() -> None:  # after every run: a long benchmark keeps what it measured
        results = {
            "command": "python benchmarks/large_catalogue.py " + " ".join(sys.argv[1:]),
            "machine": "2 CPU cores shared with other processes, one torch thread per run; "
            "timings are ratios measured side by side in one run",
            "model": MODEL,
            "speed": speed,
            "scoring": scoring,
            "accuracy": {"dataset": args.data, "runs": accuracy, "summary": summarise(accuracy)},
        }
        write_atomic_text(args.out, json.dumps(results, indent=2))

    for model, n_items, sparse in itertools.product(args.models, args.items, (False, True)):
        run = _child(
            "speed",
            {"n_items": n_items, "sparse": sparse, "steps": args.steps,
             "negatives": args.negatives, "model": model, "device": args.device,
             "amp": args.amp},
        )  # fmt: skip
        print(json.dumps(run), flush=True)
        speed.append(run)
        save()
    if args.scoring:
        scoring.append(
            _child(
                "scoring",
                {"n_items": 1_000_000, "dim": 64, "batch": 4096, "k": 100, "device": args.device},
            )
        )
        print(json.dumps(scoring[-1]), flush=True)
        save()
    for seed in range(args.seeds):
        for variant in ("softmax", "sampled-dense", "sampled-sparse"):
            run = _child(
                "accuracy",
                {"data": args.data, "seed": seed, "variant": variant,
                 "negatives": args.accuracy_negatives},
            )  # fmt: skip
            print(json.dumps(run), flush=True)
            accuracy.append(run)
            save()
    print(json.dumps(summarise(accuracy), indent=2))


if __name__ == "__main__":
    main()
