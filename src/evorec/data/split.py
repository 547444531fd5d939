"""Evaluation splits: leave-one-out and global temporal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.errors import DataError


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


def _train_events(dataset: Dataset, keep: np.ndarray) -> Dataset:
    return dataset.with_events(dataset.events.filter(pl.Series(keep)))


def leave_one_out(dataset: Dataset) -> Split:
    """Last event of each user is the test target, the one before it the validation target.

    Users with fewer than three events stay in training only.
    """
    hist = dataset.histories
    lengths = hist.lengths
    users = np.flatnonzero(lengths >= 3)
    if len(users) == 0:
        raise DataError("leave-one-out needs users with at least 3 events", path=dataset.name)
    eligible = hist.take(users)
    filter_seen = not dataset.has_repeats
    valid = EvalSet(users, eligible.slice_each(0, -2), eligible.slice_each(-2, -1), filter_seen)
    test = EvalSet(
        users, eligible.slice_each(0, -1), eligible.slice_each(-1, eligible.lengths), filter_seen
    )
    position = np.arange(len(hist.items)) - np.repeat(hist.offsets[:-1], lengths)
    user_length = np.repeat(lengths, lengths)
    keep = (user_length < 3) | (position < user_length - 2)
    protocol = {
        "split": "leave-one-out",
        "valid": "second-to-last event",
        "test": "last event",
        "eval_users": int(len(users)),
        "filter_seen": filter_seen,
    }
    return Split(dataset, _train_events(dataset, keep), valid, test, protocol)


def temporal_split(
    dataset: Dataset,
    *,
    test_time: int | None = None,
    valid_time: int | None = None,
    test_quantile: float = 0.9,
    valid_quantile: float = 0.8,
) -> Split:
    """Global temporal split: train before the validation cut, validate between the cuts,
    test after the test cut; each evaluated user's history is everything before its cut."""
    times = dataset.events["timestamp"]
    t_test = int(test_time if test_time is not None else times.quantile(test_quantile))
    t_valid = int(valid_time if valid_time is not None else times.quantile(valid_quantile))
    if not t_valid < t_test:
        raise DataError(
            "temporal split: validation cut must come before the test cut", field="timestamp"
        )
    hist = dataset.histories
    rows = hist.rows

    def eval_set(start: int, stop: int | None) -> EvalSet:
        after = hist.timestamps >= start
        if stop is not None:
            after &= hist.timestamps < stop
        n_before = np.bincount(rows, hist.timestamps < start, len(hist)).astype(np.int64)
        n_after = np.bincount(rows, after, len(hist)).astype(np.int64)
        users = np.flatnonzero((n_before > 0) & (n_after > 0))
        chosen, cut = hist.take(users), n_before[users]
        return EvalSet(
            users,
            chosen.slice_each(0, cut),
            chosen.slice_each(cut, cut + n_after[users]),
            not dataset.has_repeats,
        )

    valid, test = eval_set(t_valid, t_test), eval_set(t_test, None)
    if len(test) == 0:
        raise DataError(
            "temporal split leaves no user with events on both sides of the cut", field="timestamp"
        )
    keep = (times < t_valid).to_numpy()
    protocol = {
        "split": "temporal",
        "valid_time": t_valid,
        "test_time": t_test,
        "eval_users": int(len(test)),
        "filter_seen": test.filter_seen,
    }
    return Split(dataset, _train_events(dataset, keep), valid, test, protocol)
