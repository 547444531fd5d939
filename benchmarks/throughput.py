"""Training and inference throughput of the sequence models at one size.

For each model (``dim`` 64, ``max_len`` 50, every other setting the model's default) on one
dataset's leave-one-out training part:

- training: sequences per second over ``--batches`` batches of the trainer's own epoch
  order (forward, full-softmax loss at every scored position, backward, AdamW step), after
  ``--warmup`` batches;
- inference: histories per second of ``encode`` (the interest vectors) over the test
  users' histories.

Median of ``--repeats`` runs, printed with the ratio to SASRec measured in the same process.

    .venv/bin/python benchmarks/throughput.py --data ../shared/datasets/amazon-s3rec/Beauty.txt \\
        --out benchmarks/results/throughput_beauty.json
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
from evorec.models import get_model_class
from evorec.models.sequential import SequentialRecommender
from evorec.training.trainer import SequenceTrainer

MODELS = "gru4rec,lstm,caser,sasrec,bert4rec,tisasrec,hstu"


def training_rate(trainer: SequenceTrainer, batches: list[np.ndarray], warmup: int) -> float:
    """Sequences per second over ``batches[warmup:]``."""
    network, optimizer = trainer.network, trainer.optimizer
    network.train()
    began, sequences = 0.0, 0
    for n, rows in enumerate(batches):
        if n == warmup:
            began, sequences = time.perf_counter(), 0
        loss, _ = trainer.loss(rows)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sequences += len(rows)
    return sequences / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}, {torch.get_num_threads()} torch threads")
    split = leave_one_out(load_dataset(args.data))
    histories = split.test.histories
    results: dict[str, Any] = {"data": args.data, "load": load, "models": {}}
    for name in args.models.split(","):
        model = get_model_class(name)({"dim": 64, "max_len": 50, "device": "cpu"})
        assert isinstance(model, SequentialRecommender)
        model.prepare(split.train, progress=False)
        trainer = SequenceTrainer(model, split.train, None)
        batches = trainer.batches()[: args.warmup + args.batches]
        train, infer = [], []
        for _ in range(args.repeats):
            train.append(training_rate(trainer, batches, args.warmup))
            began = time.perf_counter()
            model.encode(histories)
            infer.append(len(histories) / (time.perf_counter() - began))
        row = {
            "params": sum(p.numel() for p in model.fitted_network().parameters()),
            "train_sequences_per_second": float(np.median(train)),
            "encode_histories_per_second": float(np.median(infer)),
            "runs": {"train": train, "encode": infer},
        }
        results["models"][name] = row
        print(
            f"{name:9} params {row['params']:>9,}  train {row['train_sequences_per_second']:8.0f}"
            f" seq/s  encode {row['encode_histories_per_second']:8.0f} histories/s",
            flush=True,
        )
    base = results["models"].get("sasrec")
    if base:
        for name, row in results["models"].items():
            row["train_vs_sasrec"] = (
                row["train_sequences_per_second"] / base["train_sequences_per_second"]
            )
            row["encode_vs_sasrec"] = (
                row["encode_histories_per_second"] / base["encode_histories_per_second"]
            )
            print(
                f"{name:9} train {row['train_vs_sasrec']:.2f}x  encode "
                f"{row['encode_vs_sasrec']:.2f}x SASRec"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
