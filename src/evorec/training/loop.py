"""The training loop of every model trained in epochs.

A model hands the loop an :class:`~evorec.models.base.EpochTask` (its module, optimizer,
one epoch's batches and a batch's loss); the loop runs the epochs with optional bf16
autocast and gradient accumulation, validates after each (NDCG@10), keeps the best
parameters, stops early, writes an atomic checkpoint per epoch and resumes from one, shows
progress, and stops on a non-finite loss or score (``check_loss``, ``validate``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evorec.data.split import EvalSet
from evorec.errors import ConfigError, ModelDirError, NonFiniteError
from evorec.evaluation.evaluator import evaluate
from evorec.io import write_atomic
from evorec.training.distributed import DataParallel, broadcast_object, context

if TYPE_CHECKING:
    from evorec.models.base import EpochTask, Recommender

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


def validation_users(valid: EvalSet | None, users: int | None, seed: int) -> EvalSet | None:
    """``valid``, or a random subset of ``users`` of its users (drawn with ``seed``)."""
    if valid is None or not users or len(valid) <= users:
        return valid
    rows = np.random.default_rng(seed).choice(len(valid), users, replace=False)
    return valid.subset(np.sort(rows))


def run_epoch(task: EpochTask, parallel: DataParallel | None = None) -> tuple[float, int]:
    """One pass over ``task``'s batches: mean loss per scored example, examples scored.
    With ``parallel`` each rank trains on its shard of every batch and the optimiser steps
    on the gradients of the whole batch."""
    settings = task.settings
    batches = task.batches() if parallel is None else parallel.shard(task.batches())
    steps = settings.accumulate
    total, scored = 0.0, 0
    task.optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(batches):
        ends_step = (index + 1) % steps == 0 or index + 1 == len(batches)
        # the last step may gather fewer batches
        group = min(steps, len(batches) - index // steps * steps)
        with contextlib.nullcontext() if parallel is None else parallel.step(sync=ends_step):
            with torch.autocast(settings.device_type, torch.bfloat16, enabled=settings.amp):
                if parallel is None:
                    loss, count = task.loss(batch)
                    weight = 1.0
                else:
                    loss, count, weight = parallel.loss(batch)
            (loss * (weight / group)).backward()
        if ends_step:
            task.optimizer.step()
            task.optimizer.zero_grad(set_to_none=True)
        total += loss.item() * count
        scored += count
    if parallel is not None:
        total, scored_sum = parallel.sum([total, scored])
        scored = int(scored_sum)
    return total / max(scored, 1), scored


def validate_parallel(
    model: Recommender, valid: EvalSet, epoch: int, parallel: DataParallel, **options: Any
) -> float:
    """:func:`validate` with every rank scoring its share of the users; the mean over all
    of them, as rank 0 computed it, on every rank."""
    rows = parallel.rows(len(valid))
    part = validate(model, valid.subset(rows), epoch, **options) if len(rows) else 0.0
    metric_sum, users = parallel.sum([part * len(rows), len(rows)])
    return parallel.broadcast(metric_sum / users)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: written to a temp file in the same directory, then renamed."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The saved training state, read as tensors and plain values only: a crafted file
    cannot run code."""
    try:
        # on the CPU: rank 0 hands it to the other ranks; loading moves it to the device
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # unpickling refusals and truncations have many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelDirError(
            f"{path}: not a readable training checkpoint ({reason}); "
            "train without --resume to start again"
        ) from None
    if not isinstance(state, dict):
        raise ModelDirError(f"{path}: not a training checkpoint")
    return state


def train_epochs(
    model: Recommender,
    task: EpochTask,
    valid: EvalSet | None,
    *,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``task`` for up to ``task.settings.epochs`` epochs; after each, validate
    ``model`` on ``valid`` and keep the module's best parameters, stopping after
    ``patience`` epochs without gain. ``checkpoint`` receives the training state after every
    epoch; with ``resume`` training continues from the one there. Returns the fit info."""
    settings = task.settings
    module, optimizer = task.module, task.optimizer
    ctx = context()
    valid = validation_users(valid, settings.valid_users, settings.seed)
    options = (
        {} if settings.valid_filter_seen is None else {"filter_seen": settings.valid_filter_seen}
    )
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "metric": -1.0, "state": None}
    start_epoch, train_seconds, wall_seconds = 1, 0.0, 0.0
    state = None
    if resume and checkpoint is not None and ctx.is_main and checkpoint.exists():
        state = load_checkpoint(checkpoint)
    if ctx.active:  # rank 0 read the checkpoint; every rank resumes from it
        state = broadcast_object(state)
    if state is not None:
        try:
            module.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
            task.set_rng_state(state)
            torch.set_rng_state(state["torch_rng"])
            best, history = state["best"], state["history"]
            start_epoch = state["epoch"] + 1
        except (RuntimeError, ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{checkpoint}: cannot resume, the checkpoint was written by another model, "
                "model settings or dataset; train without --resume to start again"
            ) from None
        if history:
            train_seconds = history[-1]["train_seconds"]
            wall_seconds = history[-1].get("wall_seconds", train_seconds)
    columns = [
        TextColumn(f"[bold]{model.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    # after resuming: DDP starts every rank from rank 0's parameters
    parallel = DataParallel(task, ctx) if ctx.active else None
    with Progress(*columns, disable=not progress or not ctx.is_main, transient=False) as bar:
        bar_task = bar.add_task(
            "train", total=settings.epochs, completed=start_epoch - 1, status=""
        )
        for epoch in range(start_epoch, settings.epochs + 1):
            module.train()
            began = time.perf_counter()
            if parallel is not None:  # dropout masks differ between ranks, and on resume
                torch.manual_seed(settings.seed + 1_000_003 * epoch + ctx.rank)
            loss, scored = run_epoch(task, parallel)
            check_loss(model, epoch, loss)
            module.eval()
            epoch_seconds = time.perf_counter() - began
            train_seconds += epoch_seconds
            record = {
                "epoch": epoch,
                "loss": loss,
                "epoch_seconds": epoch_seconds,
                "train_seconds": train_seconds,
                "positions": scored,
                "sequences_per_second": task.examples / epoch_seconds,
            }
            status = f"loss {loss:.4f}"
            if valid is not None:
                metric = (
                    validate(model, valid, epoch, **options)
                    if parallel is None
                    else validate_parallel(model, valid, epoch, parallel, **options)
                )
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
            bar.update(bar_task, completed=epoch, status=status)
            log.info("epoch %d %s (%.1fs)", epoch, status, epoch_seconds)
            if checkpoint is not None and ctx.is_main:
                state = {
                    "epoch": epoch,
                    "network": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "best": best,
                    "history": history,
                    "torch_rng": torch.get_rng_state(),
                    **task.rng_state(),
                }
                save_checkpoint(checkpoint, state)
            if valid is not None and epoch - best["epoch"] >= settings.patience:
                break
    if best["state"] is not None:
        module.load_state_dict(best["state"])
    module.eval()
    epochs_run = len(history)
    return {
        "best_epoch": best["epoch"] if best["state"] is not None else epochs_run,
        "best_valid": {VALID_METRIC: best["metric"]} if best["state"] is not None else {},
        "epochs": epochs_run,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "seconds_per_epoch": float(np.median([h["epoch_seconds"] for h in history])),
        "sequences_per_second": float(np.median([h["sequences_per_second"] for h in history])),
        "train_sequences": task.examples,
        "positions_per_epoch": float(np.median([h.get("positions", 0) for h in history])),
        "history": history,
    }
