"""Epochs with validation NDCG@10 and early stopping, for models that make their own
batches (graph and multi-task models); the sequence models use :mod:`.trainer`."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from evorec.data.split import EvalSet
from evorec.errors import NonFiniteError
from evorec.evaluation.evaluator import evaluate

if TYPE_CHECKING:
    from evorec.models.base import Recommender

VALID_METRIC = "NDCG@10"
log = logging.getLogger(__name__)


def check_loss(model: Recommender, epoch: int, loss: float) -> None:
    """Stop training when the epoch's mean loss is NaN or infinite."""
    if not math.isfinite(loss):
        raise NonFiniteError(
            f"{model.name}: the training loss became {loss} in epoch {epoch}: the model "
            "diverged (try a lower lr); training stopped, nothing was saved"
        )


def validate(model: Recommender, valid: EvalSet, epoch: int, **options: Any) -> float:
    """Validation NDCG@10 after ``epoch``; non-finite scores stop training."""
    try:
        return evaluate(model, valid, ks=(10,), **options).metrics[VALID_METRIC]
    except NonFiniteError as exc:
        raise NonFiniteError(
            f"{model.name}, validation after epoch {epoch}: {exc}; training stopped, "
            "nothing was saved"
        ) from None


def train_epochs(
    model: Recommender,
    module: nn.Module,
    run_epoch: Callable[[], tuple[float, int]],
    valid: EvalSet | None,
    *,
    epochs: int,
    patience: int,
    progress: bool = False,
    filter_seen: bool | None = None,
) -> dict[str, Any]:
    """Call ``run_epoch`` (one pass over the training data: mean loss, examples seen) up to
    ``epochs`` times; after each, validate ``model`` on ``valid`` and keep ``module``'s best
    parameters, stopping after ``patience`` epochs without gain. ``filter_seen`` is passed
    to the evaluation when given. Returns the fit info (the keys the trainer reports)."""
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "metric": -1.0, "state": None}
    options = {} if filter_seen is None else {"filter_seen": filter_seen}
    train_seconds = wall_seconds = 0.0
    examples = 0
    columns = [
        TextColumn(f"[bold]{model.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=epochs, status="")
        for epoch in range(1, epochs + 1):
            began = time.perf_counter()
            module.train()
            loss, examples = run_epoch()
            check_loss(model, epoch, loss)
            module.eval()
            seconds = time.perf_counter() - began
            train_seconds += seconds
            record = {
                "epoch": epoch,
                "loss": loss,
                "epoch_seconds": seconds,
                "train_seconds": train_seconds,
                "sequences_per_second": examples / seconds,
            }
            status = f"loss {loss:.4f}"
            if valid is not None:
                metric = validate(model, valid, epoch, **options)
                record[VALID_METRIC] = metric
                if metric > best["metric"]:
                    best = {
                        "epoch": epoch,
                        "metric": metric,
                        "state": copy.deepcopy(module.state_dict()),
                    }
                status += (
                    f"  val {VALID_METRIC} {metric:.4f}"
                    f" (best {best['metric']:.4f} @ {best['epoch']})"
                )
            wall_seconds += time.perf_counter() - began
            record["wall_seconds"] = wall_seconds
            history.append(record)
            bar.update(task, completed=epoch, status=status)
            log.info("epoch %d %s (%.1fs)", epoch, status, seconds)
            if valid is not None and epoch - best["epoch"] >= patience:
                break
    if best["state"] is not None:
        module.load_state_dict(best["state"])
    module.eval()
    return {
        "best_epoch": best["epoch"] if best["state"] is not None else len(history),
        "best_valid": {VALID_METRIC: best["metric"]} if best["state"] is not None else {},
        "epochs": len(history),
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "seconds_per_epoch": float(np.median([h["epoch_seconds"] for h in history])),
        "sequences_per_second": float(np.median([h["sequences_per_second"] for h in history])),
        "train_sequences": examples,
        "history": history,
    }
