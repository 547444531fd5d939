"""Cold-item protocol: items held out of training entirely, ranked for the users who go on
to take them.

A random ``fraction`` of the items is chosen as cold and every event of theirs is removed
from training (training is a leave-one-out split of the remaining warm events, whose
validation part drives early stopping). Each user with a warm event before their first
cold one is evaluated: the history is the events before that first cold event (all warm),
the targets are the distinct cold items the user takes from there on. Ranking is over the
full catalogue, cold items included, history items filtered as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from evorec.data.dataset import ITEM_IDX, Dataset
from evorec.data.histories import Histories
from evorec.data.split.base import EvalSet, Split
from evorec.data.split.leave_one_out import leave_one_out
from evorec.data.split.registry import register_protocol
from evorec.errors import DataError

if TYPE_CHECKING:
    from evorec.config import SplitConfig


@dataclass
class ColdItemSplit:
    """``split`` trains on warm events only; ``test`` asks for ``cold_items``."""

    split: Split
    test: EvalSet
    cold_items: np.ndarray


def cold_item_split(dataset: Dataset, fraction: float = 0.1, seed: int = 0) -> ColdItemSplit:
    """Hold out ``fraction`` of the items (drawn uniformly with ``seed``) from training."""
    if not 0 < fraction < 1:
        raise DataError(f"cold item fraction must be in (0, 1), got {fraction}", field="fraction")
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(fraction * dataset.n_items))
    cold_items = np.sort(rng.choice(dataset.n_items, n_cold, replace=False))
    is_cold = np.zeros(dataset.n_items, dtype=bool)
    is_cold[cold_items] = True
    warm = dataset.with_events(
        dataset.events.filter(pl.Series(~is_cold[dataset.events[ITEM_IDX].to_numpy()]))
    )
    hist = dataset.histories
    cold_event = is_cold[hist.items]
    # position of each user's first cold event (length when none)
    rows = hist.rows
    position = np.arange(len(hist.items)) - hist.offsets[rows]
    first = np.full(len(hist), np.iinfo(np.int64).max)
    np.minimum.at(first, rows[cold_event], position[cold_event])
    users = np.flatnonzero((first > 0) & (first < hist.lengths))
    if len(users) == 0:
        raise DataError("no user takes a cold item after a warm one", path=dataset.name)
    chosen = hist.take(users)
    histories = chosen.slice_each(0, first[users])
    after = chosen.slice_each(first[users], chosen.lengths)
    targets = _keep(after, is_cold[after.items])
    test = EvalSet(users, histories, targets, not dataset.has_repeats)
    return ColdItemSplit(leave_one_out(warm), test, cold_items)


def _keep(histories: Histories, mask: np.ndarray) -> Histories:
    """The events of ``histories`` where ``mask`` holds, per row."""
    offsets = np.zeros(len(histories) + 1, dtype=np.int64)
    np.cumsum(np.bincount(histories.rows[mask], minlength=len(histories)), out=offsets[1:])
    return Histories(offsets, histories.items[mask])


@register_protocol("cold-items")
def _from_config(dataset: Dataset, config: SplitConfig) -> Split:
    """Training and validation on the warm events, the test asking for the cold items."""
    cold = cold_item_split(dataset, fraction=config.cold_fraction, seed=config.cold_seed)
    warm = cold.split
    protocol = {
        "split": "cold-items",
        "cold_fraction": config.cold_fraction,
        "cold_items": len(cold.cold_items),
        "cold_users": len(cold.test),
        "filter_seen": cold.test.filter_seen,
    }
    return Split(warm.full, warm.train, warm.valid, cold.test, protocol)
