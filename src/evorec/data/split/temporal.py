"""Global temporal split: train before the validation cut, validate between the cuts, test
after the test cut."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evorec.data.dataset import Dataset
from evorec.data.split.base import EvalSet, Split, train_events
from evorec.data.split.registry import register_protocol
from evorec.errors import ConfigError, DataError

if TYPE_CHECKING:
    from evorec.config import SplitConfig


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
    return Split(dataset, train_events(dataset, keep), valid, test, protocol)


@register_protocol("temporal")
def _from_config(dataset: Dataset, config: SplitConfig) -> Split:
    if not dataset.has_time:
        raise ConfigError(f"temporal split needs timestamps; {dataset.name} only gives event order")
    return temporal_split(
        dataset,
        test_time=config.test_time,
        test_quantile=config.test_quantile,
        valid_quantile=config.valid_quantile,
    )
