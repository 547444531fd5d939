"""``evorec sweep``: one architecture trained at several sizes, test NDCG@10 against
parameters and training FLOPs (the scaling curve), as JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

from evorec.config import apply_override
from evorec.data.load import load_dataset
from evorec.data.split import leave_one_out
from evorec.errors import ConfigError
from evorec.evaluation.evaluator import evaluate
from evorec.io import write_atomic
from evorec.models import get_model_class
from evorec.models.sequential import SequentialRecommender
from evorec.training.pipeline import count_parameters
from evorec.training.trainer import SequenceTrainer

FLOP_SAMPLE_BATCHES = 8


def parse_size(text: str) -> dict[str, Any]:
    """``"dim=64,layers=2"`` -> ``{"dim": 64, "layers": 2}``."""
    size: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ConfigError(f"--size {text}: expected key=value pairs, got '{part}'")
        apply_override(size, part)
    if not size:
        raise ConfigError("--size: empty size")
    return size


def training_flops_per_position(model: SequentialRecommender, split_train: Any) -> float:
    """Forward + backward FLOPs of one scored training position, counted by
    :class:`FlopCounterMode` over a sample of real training batches."""
    trainer = SequenceTrainer(model, split_train, None)
    batches = trainer.batches()
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(batches), min(FLOP_SAMPLE_BATCHES, len(batches)), replace=False)
    flops, positions = 0, 0
    network = model.fitted_network()
    network.train()
    for index in chosen:
        counter = FlopCounterMode(display=False)
        with counter:
            loss, count = trainer.loss(batches[index])
            loss.backward()
        flops += counter.get_total_flops()
        positions += count
    network.zero_grad(set_to_none=True)
    network.eval()
    return flops / max(positions, 1)


def sweep_header(path: str, model_name: str, overrides: list[str]) -> dict[str, Any]:
    """What makes two sweeps comparable: the data, the sequence model and the settings
    shared by every size."""
    model_cls = get_model_class(model_name)
    if not issubclass(model_cls, SequentialRecommender):
        raise ConfigError(f"sweep needs a sequence model; {model_name} is not one")
    shared: dict[str, Any] = {}
    for assignment in overrides:
        apply_override(shared, assignment)
    return {"path": str(path), "model": model_cls.name, "overrides": shared}


def merge_sweeps(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the runs of ``previous`` added, ordered by parameters; both must be
    the same model on the same data with the same shared settings."""
    for key in ("path", "model", "overrides"):
        if previous.get(key) != new[key]:
            raise ConfigError(
                f"cannot add to a sweep of another {key}: {previous.get(key)!r} there, "
                f"{new[key]!r} here"
            )
    sizes = {json.dumps(run["size"], sort_keys=True) for run in new["runs"]}
    kept = [r for r in previous["runs"] if json.dumps(r["size"], sort_keys=True) not in sizes]
    runs = sorted(kept + new["runs"], key=lambda run: run["parameters"])
    return {**new, "runs": runs}


def run_sweep(
    path: str,
    model_name: str,
    sizes: list[dict[str, Any]],
    *,
    fmt: str = "auto",
    overrides: list[str] | None = None,
    progress: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` at each size (config overrides) on the leave-one-out split of
    ``path``; report test metrics, parameters and training FLOPs per size."""
    console = console or Console(quiet=True)
    header = sweep_header(path, model_name, overrides or [])
    model_cls = get_model_class(model_name)
    shared = header["overrides"]
    dataset = load_dataset(path, fmt)
    split = leave_one_out(dataset)
    results: dict[str, Any] = {
        "dataset": Path(path).stem,
        **header,
        "stats": dataset.stats(),
        "filter_seen": split.test.filter_seen,
        "runs": [],
    }
    for size in sizes:
        model = model_cls({**shared, **size})
        began = time.perf_counter()
        model.fit(split, progress=progress)
        train_seconds = time.perf_counter() - began
        test = evaluate(model, split.test)
        info = model.fit_info
        per_position = training_flops_per_position(model, split.train)
        run = {
            "size": size,
            "parameters": count_parameters(model),
            "training_flops": per_position * info["positions_per_epoch"] * info["epochs"],
            "flops_per_position": per_position,
            "epochs": info["epochs"],
            "best_epoch": info["best_epoch"],
            "train_seconds": train_seconds,
            "seconds_per_epoch": info["seconds_per_epoch"],
            **test.metrics,
        }
        results["runs"].append(run)
        console.print(
            f"  {model_cls.name} {size}: {run['parameters']:,} params, "
            f"{run['training_flops']:.3g} FLOPs, NDCG@10 {run['NDCG@10']:.4f}"
        )
    return results


def sweep_table(results: dict[str, Any]) -> str:
    """Markdown: one row per size; ``NDCG@10 ×`` against the smallest size."""
    header = ["size", "params", "training FLOPs", "epochs", "train s", "HR@10", "NDCG@10"]
    header.append("NDCG@10 ×")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    runs = results["runs"]
    baseline = runs[0]["NDCG@10"] if runs else 0.0
    for run in runs:
        size = ", ".join(f"{k}={v}" for k, v in run["size"].items())
        ratio = f"{run['NDCG@10'] / baseline:.2f}" if baseline else "-"
        lines.append(
            f"| {size} | {run['parameters']:,} | {run['training_flops']:.3g} | "
            f"{run['epochs']} | {run['train_seconds']:.0f} | {run['HR@10']:.4f} | "
            f"{run['NDCG@10']:.4f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def plot_sweep(results: dict[str, Any], path: Path) -> None:
    """NDCG@10 against parameters and against training FLOPs (log x axes), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    ndcg = [r["NDCG@10"] for r in runs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in (
        (axes[0], "parameters", "parameters"),
        (axes[1], "training_flops", "training FLOPs"),
    ):
        xs = [r[key] for r in runs]
        ax.plot(xs, ndcg, marker="o")
        for x, y, run in zip(xs, ndcg, runs, strict=True):
            ax.annotate(
                ",".join(str(v) for v in run["size"].values()),
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("test NDCG@10")
    fig.suptitle(f"{results['model']} on {results['dataset']}: scaling")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
