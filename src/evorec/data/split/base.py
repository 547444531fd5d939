"""What every split protocol returns: :class:`Split` (train events, validation and test
:class:`EvalSet`) and the helper that keeps a dataset's training events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories


@dataclass
class EvalSet:
    """Users to evaluate, the history each one has, and the items each one goes on to take.

    ``filter_seen``: the protocol's default for removing history items from the ranking,
    true unless users of the dataset take the same item again (repeat consumption)."""

    users: np.ndarray
    histories: Histories
    targets: Histories
    filter_seen: bool = True

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> EvalSet:
        return EvalSet(
            self.users[rows], self.histories.take(rows), self.targets.take(rows), self.filter_seen
        )


@dataclass
class Split:
    """``train`` events for fitting; ``valid`` for early stopping; ``test`` for the report.

    ``full`` is the whole dataset: the histories a deployed model recommends from.
    """

    full: Dataset
    train: Dataset
    valid: EvalSet
    test: EvalSet
    protocol: dict[str, Any] = field(default_factory=dict)


def train_events(dataset: Dataset, keep: np.ndarray) -> Dataset:
    """``dataset`` with only the events where ``keep`` holds (in event order)."""
    return dataset.with_events(dataset.events.filter(pl.Series(keep)))
