"""``evorec bench``: the standard protocol for several models on several datasets."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from evorec.config import apply_override
from evorec.data.load import load_dataset
from evorec.data.split import leave_one_out
from evorec.evaluation.evaluator import evaluate, users_label
from evorec.models import get_model_class
from evorec.training.pipeline import count_parameters
from evorec.version import __version__

TABLE_METRICS = ("HR@10", "NDCG@10", "MRR@10", "Coverage@10")


def model_overrides(overrides: list[str], models: list[str]) -> dict[str, dict[str, Any]]:
    """``key=value`` applies to every model whose config has ``key``; ``name.key=value`` to one."""
    shared: dict[str, Any] = {}
    per_model: dict[str, dict[str, Any]] = {name: {} for name in models}
    for assignment in overrides:
        key = assignment.split("=", 1)[0]
        head = key.split(".", 1)[0]
        if head in per_model and "." in key:
            apply_override(per_model[head], assignment.split(".", 1)[1])
        else:
            apply_override(shared, assignment)
    out = {}
    for name in models:
        fields = get_model_class(name).config_class.model_fields
        out[name] = {k: v for k, v in shared.items() if k in fields} | per_model[name]
    return out


def time_to_quality(
    history: list[dict[str, float]], threshold: float, clock: str = "train_seconds"
) -> float | None:
    """Seconds (of training alone, or ``wall_seconds`` with validation) at which validation
    NDCG@10 first reached ``threshold``."""
    for record in history:
        if record.get("NDCG@10", -1.0) >= threshold:
            return record[clock]
    return None


def run_bench(
    paths: list[str],
    models: list[str],
    *,
    fmt: str = "auto",
    overrides: list[str] | None = None,
    quality: float = 0.04,
    progress: bool = False,
    console: Console | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    seeds: list[int] | None = None,
    eval_users: int | None = None,
) -> dict[str, Any]:
    """Run every model on every dataset, once per seed of ``seeds`` (by default the model's
    configured seed); each model's row holds the mean of every metric over the seeds, their
    standard deviation under ``std`` and each seed's run under ``runs``. ``checkpoint``
    receives the results so far after each model, so a long run that is interrupted keeps
    what it finished. With ``eval_users`` every model is tested on the same random sample of
    that many users of each dataset (``ci95``: the 95% confidence intervals)."""
    seeds = seeds or [None]
    console = console or Console(quiet=True)
    params = model_overrides(overrides or [], models)
    results: dict[str, Any] = {
        "evorec_version": __version__,
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
        "protocol": {
            "split": "leave-one-out (last event test, second-to-last validation)",
            "ranking": "full ranking over all items, no sampled negatives",
            "filter_seen": "history items removed from the ranking unless the dataset has "
            "repeat consumption",
            "early_stopping": "validation NDCG@10",
            "selection": "epochs chosen on validation NDCG@10 only; test metrics are "
            "reported, never used to choose",
            "ties": "broken at random per user (a constant model gets the random hit rate)",
            **(
                {
                    "test_users": f"a uniform random sample of {eval_users} users per dataset, "
                    "the same for every model; ci95: half-width of the 95% confidence interval "
                    "of each metric's mean over all test users"
                }
                if eval_users is not None
                else {}
            ),
        },
        "datasets": [],
        "quality_threshold": quality,
        "seeds": seeds,
    }
    for path in paths:
        dataset = load_dataset(path, fmt)
        split = leave_one_out(dataset)
        entry: dict[str, Any] = {
            "name": Path(path).stem,
            "path": str(path),
            "stats": dataset.stats(),
            "filter_seen": split.test.filter_seen,
            "models": {},
        }
        results["datasets"].append(entry)
        console.print(
            f"[bold]{entry['name']}[/bold]: {dataset.n_users} users, "
            f"{dataset.n_items} items, {dataset.n_events} events"
        )
        for name in models:
            model_class = get_model_class(name)
            per_seed = []
            for seed in seeds:
                settings = params[name] if seed is None else {**params[name], "seed": seed}
                model = model_class(settings)
                per_seed.append(_bench_one(model, split, quality, progress, eval_users))
            row = aggregate_seeds(per_seed, seeds)
            model_name = per_seed[0]["name"]
            entry["models"][model_name] = row
            if checkpoint is not None:
                checkpoint(results)
            spread = (
                f" ± {row['std']['NDCG@10']:.4f} over {len(seeds)} seeds" if len(seeds) > 1 else ""
            )
            if _sampled(row):
                spread += f" (95% CI ± {row['ci95']['NDCG@10']:.4f}, {_test_users(row)} users)"
            console.print(
                f"  {model_name}: NDCG@10 {row['NDCG@10']:.4f}{spread} "
                f"HR@10 {row['HR@10']:.4f} ({row['train_seconds']:.0f}s train)"
            )
    return results


def _bench_one(
    model: Any, split: Any, quality: float, progress: bool, eval_users: int | None = None
) -> dict[str, Any]:
    """Fit ``model`` on ``split`` (validation picks the epoch) and evaluate it on the test
    (on a sample of ``eval_users`` users when given)."""
    began = time.perf_counter()
    model.fit(split, progress=progress)
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    test = evaluate(model, split.test, users=eval_users)
    eval_seconds = time.perf_counter() - began
    info = model.fit_info
    row: dict[str, Any] = {
        "name": model.name,
        **test.metrics,
        "test_users": test.users,
        "test_population": test.population,
        "ci95": test.ci95,
        "config": model.config.model_dump(),
        "parameters": count_parameters(model),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }
    if "history" in info:
        row.update(
            best_epoch=info["best_epoch"],
            epochs=info["epochs"],
            seconds_per_epoch=info["seconds_per_epoch"],
            sequences_per_second=info["sequences_per_second"],
            best_valid_ndcg10=info["best_valid"].get("NDCG@10"),
            time_to_valid_ndcg10=time_to_quality(info["history"], quality),
            wall_time_to_valid_ndcg10=time_to_quality(info["history"], quality, "wall_seconds"),
            # (epoch, train_seconds, NDCG@10, wall_seconds with validation)
            valid_curve=[
                (h["epoch"], h["train_seconds"], h.get("NDCG@10"), h.get("wall_seconds"))
                for h in info["history"]
            ],
        )
    return row


def aggregate_seeds(runs: list[dict[str, Any]], seeds: list[int | None]) -> dict[str, Any]:
    """One row for several seeds of a model: every numeric field is the mean over the runs
    (a field some runs lack, such as a quality never reached, is the mean of the others),
    ``std`` holds the sample standard deviations, ``runs`` each run with its seed."""
    if len(runs) == 1:
        return {**runs[0], "seeds": seeds}
    row: dict[str, Any] = {"config": runs[0]["config"], "seeds": seeds, "std": {}}
    for key, value in runs[0].items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        same_int = all(isinstance(v, int) for v in values) and len(set(values)) == 1
        row[key] = values[0] if same_int else float(np.mean(values))
        row["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if "ci95" in runs[0]:  # every seed tests the same users: the mean half-width
        row["ci95"] = {
            key: float(np.mean([run["ci95"][key] for run in runs])) for key in runs[0]["ci95"]
        }
    row["runs"] = [{"seed": seed, **run} for seed, run in zip(seeds, runs, strict=True)]
    return row


def _sampled(row: dict[str, Any]) -> bool:
    """Whether ``row`` was tested on a sample of the test users (rows of older results
    record no sample size: tested on all)."""
    return row.get("test_users", 0) < row.get("test_population", 0)


def _test_users(row: dict[str, Any]) -> str:
    return f"{row['test_users']} of {row['test_population']}"


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _spread(row: dict[str, Any], key: str) -> str:
    std = row.get("std", {}).get(key)
    return _cell(row.get(key)) + (f" ± {std:.4f}" if std is not None else "")


def markdown_table(results: dict[str, Any]) -> str:
    """One row per dataset and model, metrics as mean ± std over the seeds where there are
    several; ``val NDCG@10`` is the best validation score (what selects), ``NDCG@10 ×`` the
    ratio to the first model run on the same dataset in the same process (the baseline).
    Where the test was on a sample of users, a line above the table says so and two columns
    give the sample size and the 95% confidence interval of NDCG@10."""
    sampled = {
        entry["name"]: users_label(row["test_users"], row["test_population"])
        for entry in results["datasets"]
        for row in entry["models"].values()
        if _sampled(row)
    }
    header = [
        "dataset",
        "seen",
        "model",
        *TABLE_METRICS,
        "val NDCG@10",
        "NDCG@10 ×",
        "params",
        "best epoch",
        "train s",
        "s/epoch",
        "seq/s",
        "eval s",
        f"s to val NDCG@10≥{results.get('quality_threshold', 0.04)}",
        "seeds",
    ]
    if sampled:
        header[3 + len(TABLE_METRICS) : 3 + len(TABLE_METRICS)] = ["test users", "NDCG@10 95% CI"]
    lines = [f"{name}: test on {label}" for name, label in sampled.items()]
    lines += [""] if lines else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in results["datasets"]:
        rows = entry["models"]
        baseline = next(iter(rows.values()), {}).get("NDCG@10") if rows else None
        for name, row in rows.items():
            ratio = row["NDCG@10"] / baseline if baseline else None
            cells = [
                entry["name"],
                "filtered" if entry.get("filter_seen", True) else "kept",
                name,
                *(_spread(row, m) for m in TABLE_METRICS),
                *(_sample_cells(row) if sampled else []),
                _spread(row, "best_valid_ndcg10"),
                _cell(ratio, 2),
                _cell(row.get("parameters")),
                _cell(row.get("best_epoch")),
                _cell(row.get("train_seconds"), 0),
                _cell(row.get("seconds_per_epoch"), 1),
                _cell(row.get("sequences_per_second"), 0),
                _cell(row.get("eval_seconds"), 1),
                _cell(row.get("time_to_valid_ndcg10"), 0),
                str(len(row.get("seeds") or [None])),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _sample_cells(row: dict[str, Any]) -> list[str]:
    """The ``test users`` and ``NDCG@10 95% CI`` cells of a row."""
    if not _sampled(row):
        return [_cell(row.get("test_users")), "-"]
    return [_test_users(row), f"± {row['ci95']['NDCG@10']:.4f}"]
