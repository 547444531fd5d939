"""Knowledge distillation: a small sequence model trained on a large one's scores.

The student's batches and next-item loss are its own :class:`SequenceTask`'s; at every
scored position the loss adds the KL divergence between the teacher's and the student's
softmax over the whole catalogue (both divided by ``temperature``, Hinton et al. 2015):
``(1 - alpha) · CE(student, target) + alpha · T² · KL(p_teacher || p_student)``. The
epochs run through the one training loop, validated and stopped early like any fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evorec.data.split import Split
from evorec.errors import ConfigError
from evorec.models.sequential import SequenceTask, SequentialRecommender
from evorec.training.loop import train_epochs


class DistillTask(SequenceTask):
    """The student's :class:`SequenceTask` with the teacher's softened scores as a second
    target at each scored position."""

    def __init__(
        self,
        student: SequentialRecommender,
        teacher: SequentialRecommender,
        split: Split,
        alpha: float,
        temperature: float,
    ) -> None:
        super().__init__(student, split.train)
        if teacher.train_window != student.train_window:
            raise ConfigError(
                f"distillation needs the teacher and student to read the same windows "
                f"(teacher {teacher.train_window} events, student {student.train_window})"
            )
        if teacher.n_items != split.train.n_items:
            raise ConfigError(
                f"the teacher knows {teacher.n_items} items, the training data "
                f"{split.train.n_items}"
            )
        self.teacher = teacher
        self.alpha = alpha
        self.temperature = temperature
        self.rows: np.ndarray | None = None  # the batch whose output loss comes next

    def loss(self, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        self.rows = rows
        return super().loss(rows)

    def output_loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hard = super().output_loss(hidden, target)
        if self.alpha == 0:
            return hard
        teacher_logits = self.teacher_logits()
        if len(teacher_logits) != len(target):
            raise ConfigError("the teacher scores other positions than the student")
        student_vectors, items = self.model.scoring_space(hidden, self.network.item_weights())
        tau = self.temperature
        soft = F.kl_div(
            F.log_softmax(student_vectors @ items.T / tau, dim=-1),
            F.log_softmax(teacher_logits / tau, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
        return (1 - self.alpha) * hard + self.alpha * tau**2 * soft

    @torch.no_grad()
    def teacher_logits(self) -> torch.Tensor:
        """The teacher's scores of every item at the current batch's scored positions."""
        teacher = self.teacher
        network = teacher.fitted_network()
        network.eval()
        batch = self.sequences.take(self.rows)
        device = next(network.parameters()).device
        items, features, _ = teacher.padded_batch(batch, teacher.train_window, device)
        inputs, input_features, targets = teacher.training_example(items, features, self.generator)
        hidden = network(inputs, input_features)
        heads = teacher.training_heads(hidden, targets, features, batch.users)
        mask, vectors = heads[0][1], heads[0][2]
        scores, weights = teacher.scoring_space(vectors[mask], network.item_weights())
        return (scores @ weights.T).to(self.device)


def distill(
    student: SequentialRecommender,
    teacher: SequentialRecommender,
    split: Split,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    progress: bool = False,
) -> SequentialRecommender:
    """Train ``student`` on ``split``'s training part with the next-item loss mixed with
    ``teacher``'s scores (epochs chosen on the validation set); it then recommends from the
    split's full histories, like ``fit(split)``."""
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise ConfigError("distillation needs 0 <= alpha <= 1 and temperature > 0")
    student.seed_rngs()
    student.prepare(split.train, progress)
    task = DistillTask(student, teacher, split, alpha, temperature)
    info: dict[str, Any] = train_epochs(student, task, split.valid, progress=progress)
    student.fit_info = {**info, "distilled": {"alpha": alpha, "temperature": temperature}}
    student.dataset = split.full
    return student
