"""How close SASRec's training comes to the machine's limit.

Almost all of a full-softmax epoch is the output layer: for P scored positions, width d and
N items, the logits ``[P × d] @ [d × N]`` and their two gradients cost 6·P·d·N FLOPs. This
script trains ``--epochs`` real epochs of the default SASRec on one dataset's leave-one-out
training part (no validation), counts P, and divides those output-layer FLOPs by the median
epoch time. The limit is a plain matmul of the same shape on the same threads (a batch's
positions × d against d × N, forward and both gradients), timed in the same process.
The share is the first over the second: what the epoch achieves of what one matmul
sustains, with everything else the epoch does (batching, attention, softmax, AdamW) counted
against it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/throughput_limit.py \\
        --data ../shared/datasets/amazon-s3rec/Beauty.txt \\
        --out benchmarks/results/throughput_limit_beauty.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evorec.data.load import load_dataset
from evorec.data.split import leave_one_out
from evorec.io import write_atomic_text
from evorec.models import SASRec


def matmul_gflops(positions: int, dim: int, items: int, repeats: int) -> float:
    """GFLOP/s of the output layer as bare matmuls: logits, then both gradients."""
    hidden = torch.randn(positions, dim)
    weight = torch.randn(items, dim)
    grad = torch.randn(positions, items)
    times = []
    for _ in range(repeats + 1):
        began = time.perf_counter()
        hidden @ weight.T  # logits
        grad @ weight  # d hidden
        grad.T @ hidden  # d weight
        times.append(time.perf_counter() - began)
    return 6 * positions * dim * items / float(np.median(times[1:])) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    split = leave_one_out(load_dataset(args.data))
    model = SASRec(epochs=args.epochs, device="cpu").fit(split.train)
    info = model.fit_info
    dim, items = model.config.dim, split.train.n_items
    positions = float(info["positions_per_epoch"])
    epoch_seconds = float(np.median([h["epoch_seconds"] for h in info["history"]]))
    achieved = 6 * positions * dim * items / epoch_seconds / 1e9
    # one batch's scored positions: the shape the trainer multiplies
    batches = int(np.ceil(info["train_sequences"] / model.config.batch_size))
    batch_positions = int(positions / batches)
    limit = matmul_gflops(batch_positions, dim, items, args.repeats)
    results: dict[str, Any] = {
        "data": args.data,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "config": model.config.model_dump(),
        "positions_per_epoch": positions,
        "items": items,
        "epoch_seconds": epoch_seconds,
        "output_layer_gflop_per_epoch": 6 * positions * dim * items / 1e9,
        "achieved_gflops": achieved,
        "matmul_batch_positions": batch_positions,
        "matmul_gflops": limit,
        "share_of_matmul": achieved / limit,
        "epochs": [h["epoch_seconds"] for h in info["history"]],
    }
    print(
        f"{positions:,.0f} positions/epoch x {items:,} items x dim {dim}: "
        f"{results['output_layer_gflop_per_epoch']:.0f} GFLOP in {epoch_seconds:.1f} s = "
        f"{achieved:.1f} GFLOP/s; plain matmul of a batch ({batch_positions} x {dim} x "
        f"{items}) {limit:.1f} GFLOP/s; share {achieved / limit:.0%}"
    )
    if args.out:
        write_atomic_text(args.out, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
