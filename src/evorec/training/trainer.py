"""Training loop of the sequence models.

Sequence-to-sequence: every position of a training sequence predicts the next item (or
whatever targets the model's ``training_example`` sets, e.g. masked items), with a
cross-entropy loss over the full catalogue (or a sampled softmax with logQ correction).
Batches group sequences of similar length and the output layer runs only at scored
positions, so padding costs almost nothing. Optional bf16 autocast on CUDA and gradient
accumulation over several batches.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evorec.data.dataset import Dataset
from evorec.data.split import EvalSet
from evorec.errors import ConfigError, ModelDirError
from evorec.io import write_atomic
from evorec.training.loop import VALID_METRIC, check_loss, validate

if TYPE_CHECKING:
    from evorec.models.sequential import SequentialRecommender

log = logging.getLogger(__name__)


class SequenceTrainer:
    def __init__(
        self,
        model: SequentialRecommender,
        train: Dataset,
        valid: EvalSet | None,
        *,
        progress: bool = False,
        checkpoint_path: Path | None = None,
        resume: bool = False,
    ) -> None:
        self.model = model
        self.config = model.config
        self.network = model._network()
        self.device = next(self.network.parameters()).device
        self.progress = progress
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.resume = resume
        self.n_items = train.n_items
        self.sequences = model.training_sequences(train.histories)
        self.valid = valid
        if valid is not None and self.config.valid_users and len(valid) > self.config.valid_users:
            rows = np.random.default_rng(self.config.seed).choice(
                len(valid), self.config.valid_users, replace=False
            )
            self.valid = valid.subset(np.sort(rows))
        popularity = train.item_popularity.astype(np.float64) ** self.config.negative_power
        self.negative_probs = torch.from_numpy(popularity / popularity.sum()).float()
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        self.amp = self.config.amp and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        # batches vary in length and size: one dynamic-shape graph instead of one per shape
        self.forward = (
            torch.compile(self.network, dynamic=True) if self.config.compile else self.network
        )

    # -- batches --------------------------------------------------------------------------

    def batches(self) -> list[np.ndarray]:
        """Rows grouped by length (random order among equal lengths), batches shuffled."""
        lengths = self.sequences.lengths
        order = np.lexsort((self.rng.random(len(lengths)), lengths))
        size = self.config.batch_size
        groups = [order[i : i + size] for i in range(0, len(order), size)]
        self.rng.shuffle(groups)
        return groups

    def loss(self, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the scored positions of the batch ``rows``, and their count."""
        batch = self.sequences.take(rows)
        items, features, _ = self.model.padded_batch(batch, self.model.train_window, self.device)
        inputs, features, targets = self.model.training_example(items, features, self.generator)
        mask = targets > 0
        hidden = self.network.condition(self.forward(inputs, features), batch.users)[mask]
        target = targets[mask] - 1
        hidden, weight = self.model.scoring_space(hidden, self.network.item_weights())
        if self.config.loss == "softmax":
            logits = hidden @ weight.T
            return F.cross_entropy(logits, target), int(mask.sum())
        negatives = torch.multinomial(
            self.negative_probs,
            self.config.n_negatives,
            replacement=True,
            generator=self.generator,
        ).to(self.device)
        log_q = torch.log(self.negative_probs.to(self.device) * self.config.n_negatives)
        positive = (hidden * weight[target]).sum(-1, keepdim=True) - log_q[target, None]
        negative = hidden @ weight[negatives].T - log_q[negatives][None, :]
        negative = negative.masked_fill(negatives[None, :] == target[:, None], -torch.inf)
        logits = torch.cat([positive, negative], dim=1)
        zeros = torch.zeros(len(target), dtype=torch.long, device=self.device)
        return F.cross_entropy(logits, zeros), int(mask.sum())

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomic: written to a temp file in the same directory, then renamed."""
        assert self.checkpoint_path is not None
        write_atomic(self.checkpoint_path, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> dict[str, Any]:
        """The saved training state, read as tensors and plain values only: a crafted file
        cannot run code."""
        assert self.checkpoint_path is not None
        try:
            state = torch.load(self.checkpoint_path, weights_only=True)
        except Exception as exc:  # unpickling refusals and truncations have many types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelDirError(
                f"{self.checkpoint_path}: not a readable training checkpoint ({reason}); "
                "train without --resume to start again"
            ) from None
        if not isinstance(state, dict):
            raise ModelDirError(f"{self.checkpoint_path}: not a training checkpoint")
        return state

    def _checkpoint_state(self, epoch: int, best: dict[str, Any], history: list) -> dict:
        return {
            "epoch": epoch,
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best": best,
            "history": history,
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    # -- loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        config = self.config
        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"epoch": 0, "metric": -1.0, "state": None}
        start_epoch, train_seconds, wall_seconds = 1, 0.0, 0.0
        if self.resume and self.checkpoint_path and self.checkpoint_path.exists():
            ckpt = self.load_checkpoint()
            try:
                self.network.load_state_dict(ckpt["network"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError):
                raise ConfigError(
                    f"{self.checkpoint_path}: cannot resume, the checkpoint was written by "
                    "another model, model settings or dataset; train without --resume to "
                    "start again"
                ) from None
            self.rng.bit_generator.state = ckpt["rng"]
            self.generator.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            best, history = ckpt["best"], ckpt["history"]
            start_epoch = ckpt["epoch"] + 1
            if history:
                train_seconds = history[-1]["train_seconds"]
                wall_seconds = history[-1].get("wall_seconds", train_seconds)
        columns = [
            TextColumn(f"[bold]{self.model.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task("train", total=config.epochs, completed=start_epoch - 1, status="")
            for epoch in range(start_epoch, config.epochs + 1):
                self.network.train()
                began = time.perf_counter()
                total, positions = 0.0, 0
                batches = self.batches()
                steps = config.accumulate
                self.optimizer.zero_grad(set_to_none=True)
                for index, rows in enumerate(batches):
                    with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
                        loss, count = self.loss(rows)
                    # the last step may gather fewer batches
                    group = min(steps, len(batches) - index // steps * steps)
                    (loss / group).backward()
                    if (index + 1) % steps == 0 or index + 1 == len(batches):
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    total += loss.item() * count
                    positions += count
                check_loss(self.model, epoch, total / max(positions, 1))
                epoch_seconds = time.perf_counter() - began
                train_seconds += epoch_seconds
                record = {
                    "epoch": epoch,
                    "loss": total / max(positions, 1),
                    "epoch_seconds": epoch_seconds,
                    "train_seconds": train_seconds,
                    "positions": positions,
                    "sequences_per_second": len(self.sequences) / epoch_seconds,
                }
                if self.valid is not None:
                    self.network.eval()
                    record[VALID_METRIC] = validate(self.model, self.valid, epoch)
                    if record[VALID_METRIC] > best["metric"]:
                        best = {
                            "epoch": epoch,
                            "metric": record[VALID_METRIC],
                            "state": copy.deepcopy(self.network.state_dict()),
                        }
                wall_seconds += time.perf_counter() - began
                record["wall_seconds"] = wall_seconds
                history.append(record)
                status = f"loss {record['loss']:.4f}"
                if VALID_METRIC in record:
                    status += (
                        f"  val {VALID_METRIC} {record[VALID_METRIC]:.4f}"
                        f" (best {best['metric']:.4f} @ {best['epoch']})"
                    )
                bar.update(task, completed=epoch, status=status)
                log.info("epoch %d %s (%.1fs)", epoch, status, epoch_seconds)
                if self.checkpoint_path is not None:
                    self.save_checkpoint(self._checkpoint_state(epoch, best, history))
                if self.valid is not None and epoch - best["epoch"] >= config.patience:
                    break
        if best["state"] is not None:
            self.network.load_state_dict(best["state"])
        self.network.eval()
        epochs_run = len(history)
        return {
            "best_epoch": best["epoch"] if best["state"] is not None else epochs_run,
            "best_valid": {VALID_METRIC: best["metric"]} if best["state"] is not None else {},
            "epochs": epochs_run,
            "train_seconds": train_seconds,
            "wall_seconds": wall_seconds,
            "seconds_per_epoch": float(np.median([h["epoch_seconds"] for h in history])),
            "sequences_per_second": float(np.median([h["sequences_per_second"] for h in history])),
            "train_sequences": len(self.sequences),
            "positions_per_epoch": float(np.median([h.get("positions", 0) for h in history])),
            "history": history,
        }
