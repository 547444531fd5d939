"""Training a sequence model outside ``fit``: fine-tuning (``evorec update``, transfer) and
benchmarks that time its batches. The batches and the loss are the model's
:class:`~evorec.models.sequential.SequenceTask`; the epochs are :func:`.loop.train_epochs`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evorec.data.dataset import Dataset
from evorec.data.split import EvalSet
from evorec.models.sequential import SequenceTask, SequentialRecommender
from evorec.training.loop import train_epochs


class SequenceTrainer(SequenceTask):
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
        super().__init__(model, train)
        self.valid = valid
        self.progress = progress
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.resume = resume

    def run(self) -> dict[str, Any]:
        """Train with the model's settings; the fit info."""
        return train_epochs(
            self.model,
            self,
            self.valid,
            progress=self.progress,
            checkpoint=self.checkpoint_path,
            resume=self.resume,
        )
