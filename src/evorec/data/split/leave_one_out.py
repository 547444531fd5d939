"""Leave-one-out: each user's last event is the test target, the one before it validation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evorec.data.dataset import Dataset
from evorec.data.split.base import EvalSet, Split, train_events
from evorec.data.split.registry import register_protocol
from evorec.errors import DataError

if TYPE_CHECKING:
    from evorec.config import SplitConfig


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
    return Split(dataset, train_events(dataset, keep), valid, test, protocol)


@register_protocol("leave-one-out")
def _from_config(dataset: Dataset, config: SplitConfig) -> Split:
    return leave_one_out(dataset)
