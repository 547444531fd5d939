"""Next-purchase protocol for multi-behaviour logs (views, carts, favourites, purchases).

Each user's last purchase is the test target and the purchase before it the validation
target; a target's history is every event (of any behaviour) before it. Training sees each
user's events before their validation purchase (before their only purchase, or all events
when they buy nothing), so neither target nor anything after it is trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from evorec.data.dataset import Dataset
from evorec.data.split.base import EvalSet, Split
from evorec.data.split.registry import register_protocol
from evorec.errors import DataError

if TYPE_CHECKING:
    from evorec.config import SplitConfig


def next_purchase_split(dataset: Dataset, behavior: str = "buy") -> Split:
    """Split ``dataset`` for next-purchase evaluation (see the module docstring)."""
    if behavior not in dataset.behaviors:
        raise DataError(
            f"no '{behavior}' events; the dataset's behaviours are "
            f"{', '.join(dataset.behaviors) or 'none'}",
            path=dataset.name,
            field="behavior",
        )
    hist = dataset.histories
    assert hist.behaviors is not None
    rows = hist.rows
    position = np.arange(len(hist.items)) - hist.offsets[rows]
    bought = hist.behaviors == dataset.behaviors.index(behavior)
    buy_rows, buy_positions = rows[bought], position[bought]
    n_buys = np.bincount(buy_rows, minlength=len(hist))
    ends = np.cumsum(n_buys)
    last = np.full(len(hist), -1)
    previous = np.full(len(hist), -1)
    has = n_buys >= 1
    last[has] = buy_positions[ends[has] - 1]
    two = n_buys >= 2
    previous[two] = buy_positions[ends[two] - 2]

    def eval_set(at: np.ndarray) -> EvalSet:
        users = np.flatnonzero(at >= 1)  # a target with some history before it
        chosen, cut = hist.take(users), at[users]
        return EvalSet(users, chosen.slice_each(0, cut), chosen.slice_each(cut, cut + 1))

    test, valid = eval_set(last), eval_set(previous)
    if len(test) == 0:
        raise DataError(f"no user has a '{behavior}' event after another event", path=dataset.name)
    cut = np.where(two, previous, np.where(has, last, hist.lengths))
    keep = position < cut[rows]
    train = dataset.with_events(dataset.events.filter(pl.Series(keep)))
    protocol = {
        "split": "next purchase",
        "behavior": behavior,
        "valid": f"second-to-last '{behavior}' event",
        "test": f"last '{behavior}' event",
        "eval_users": int(len(test)),
    }
    return Split(dataset, train, valid, test, protocol)


@register_protocol("next-purchase")
def _from_config(dataset: Dataset, config: SplitConfig) -> Split:
    return next_purchase_split(dataset, config.behavior)
