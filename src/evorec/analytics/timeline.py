"""One user's interest timeline: what the model reads from each prefix of the history.

After each event ``t`` the history up to ``t`` is encoded (every prefix in one ``encode``
call) and ranked against every item (``Recommender.rank``: ``s = i · v``, seen items out);
the model's interest is read as the category mix of its top-N items. Beside it: the
observed category mix of the last ``window`` events, and shift points, where the events'
mix moves: the Jensen-Shannon divergence between the ``window`` events before ``t`` and
the ``window`` events from ``t`` on, at a local maximum above ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evorec.analytics.categories import ItemCategories
from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.errors import DataError
from evorec.models.base import Recommender

TOP_N = 10
WINDOW = 6  # events per side of the shift test, and of the observed mix
THRESHOLD = 0.5  # Jensen-Shannon divergence (bits) that makes a shift
MAX_STEPS = 300  # latest events a timeline covers


@dataclass(frozen=True)
class ShiftSettings:
    """How shift points are found: ``window`` events on each side, a divergence of at
    least ``threshold`` bits, at a maximum within ``window // 2`` events."""

    window: int = WINDOW
    threshold: float = THRESHOLD

    def __post_init__(self) -> None:
        if self.window < 2:
            raise DataError("the shift window needs at least 2 events", field="window")
        if not 0.0 < self.threshold <= 1.0:
            raise DataError("the shift threshold is in (0, 1] bits", field="threshold")


@dataclass
class Timeline:
    """The timeline of the latest ``len(positions)`` events of one history.

    ``positions``: each event's position in the full history; ``items``, ``timestamps``:
    its item and time; ``model_share[t, c]``: share of category ``c`` among the top-N after
    event ``t``; ``observed[t]``: category mix of the ``window`` events up to ``t``;
    ``divergence[t]``: the shift test at ``t`` (NaN where a side holds too few events);
    ``shifts``: indices ``t`` where a shift starts; ``recommended``: the top-N now.
    """

    categories: ItemCategories
    positions: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    model_share: np.ndarray
    observed: np.ndarray
    divergence: np.ndarray
    shifts: list[int]
    recommended: np.ndarray
    top_n: int
    settings: ShiftSettings = field(default_factory=ShiftSettings)

    def to_dict(self, item_ids: list[Any]) -> dict[str, Any]:
        """JSON-ready, with original item ids (``item_ids[i]`` of internal item ``i``)."""
        names = self.categories.names
        labels = self.categories.labels
        return {
            "category_column": self.categories.column,
            "categories": names,
            "top_n": self.top_n,
            "window": self.settings.window,
            "threshold": self.settings.threshold,
            "events": [
                {
                    "position": int(p),
                    "item_id": _plain(item_ids[i]),
                    "timestamp": None if self.timestamps is None else int(self.timestamps[t]),
                    "categories": labels(int(i)),
                }
                for t, (p, i) in enumerate(zip(self.positions, self.items, strict=True))
            ],
            "model_share": _rounded(self.model_share),
            "observed": _rounded(self.observed),
            "divergence": [None if np.isnan(d) else round(float(d), 4) for d in self.divergence],
            "shifts": [int(t) for t in self.shifts],
            "recommended": [
                {"item_id": _plain(item_ids[i]), "categories": labels(int(i))}
                for i in self.recommended
            ],
        }


def interest_timeline(
    model: Recommender,
    history: Histories,
    categories: ItemCategories,
    *,
    top_n: int = TOP_N,
    settings: ShiftSettings | None = None,
    max_steps: int = MAX_STEPS,
) -> Timeline:
    """The timeline of one history row (internal items; the latest ``max_steps`` events)."""
    settings = settings or ShiftSettings()
    if len(history) != 1 or history.lengths[0] == 0:
        raise DataError("a timeline needs one non-empty history", field="history")
    if top_n < 1 or max_steps < 1:
        raise DataError("top_n and max_steps must be at least 1", field="top_n")
    items = history.items
    n = len(items)
    first = max(0, n - max_steps)
    ends = np.arange(first + 1, n + 1)
    top = top_items(model, prefixes(history, ends), top_n)
    counts = categories.membership[top].sum(axis=1)
    model_share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
    member = categories.membership[items]
    observed = rolling_mix(member, settings.window)[first:]
    divergence = shift_divergence(member, settings.window)
    shifts = [int(p) - first for p in shift_points(divergence, settings) if p >= first]
    times = history.timestamps
    return Timeline(
        categories=categories,
        positions=np.arange(first, n),
        items=items[first:],
        timestamps=None if times is None else times[first:],
        model_share=model_share,
        observed=observed,
        divergence=divergence[first:],
        shifts=shifts,
        recommended=top[-1],
        top_n=top_n,
        settings=settings,
    )


def dataset_history(dataset: Dataset, user_id: Any) -> Histories:
    """The history saved in ``dataset`` of the user with original id ``user_id`` (given as
    text or typed); :class:`UnknownIdError` for a user it does not hold."""
    row = dataset.encode_users([user_id])
    return dataset.histories.take(row)


def prefixes(history: Histories, ends: np.ndarray) -> Histories:
    """The prefixes of one history row that end before each of ``ends`` (one row each)."""
    rows = history.take(np.zeros(len(ends), dtype=np.int64))
    return rows.slice_each(0, np.asarray(ends, dtype=np.int64))


def top_items(model: Recommender, histories: Histories, k: int) -> np.ndarray:
    """The top-``k`` unseen items of each history (``[rows, k]``, by ``s = i · v``)."""
    return model.rank(histories, k, exclude=histories).items


def rolling_mix(member: np.ndarray, window: int) -> np.ndarray:
    """Row ``t``: the mean of ``member`` rows ``t - window + 1 .. t`` (fewer at the start)."""
    total = np.vstack([np.zeros((1, member.shape[1])), np.cumsum(member, axis=0)])
    ends = np.arange(1, len(member) + 1)
    starts = np.maximum(ends - window, 0)
    return (total[ends] - total[starts]) / (ends - starts)[:, None]


def shift_divergence(member: np.ndarray, window: int) -> np.ndarray:
    """At each position ``p``: JSD between the mean rows of ``[p - window, p)`` and of
    ``[p, p + window)``; NaN where either side holds fewer than ``window // 2 + 1`` rows."""
    n = len(member)
    total = np.vstack([np.zeros((1, member.shape[1])), np.cumsum(member, axis=0)])
    p = np.arange(n)
    before_start, after_end = np.maximum(p - window, 0), np.minimum(p + window, n)
    before = (total[p] - total[before_start]) / np.maximum(p - before_start, 1)[:, None]
    after = (total[after_end] - total[p]) / np.maximum(after_end - p, 1)[:, None]
    divergence = jensen_shannon(before, after)
    least = window // 2 + 1
    divergence[(p - before_start < least) | (after_end - p < least)] = np.nan
    return divergence


def shift_points(divergence: np.ndarray, settings: ShiftSettings) -> list[int]:
    """Positions whose divergence reaches the threshold and is the largest within
    ``window // 2`` positions (the earlier one on a tie), in order."""
    radius = max(settings.window // 2, 1)
    values = np.where(np.isnan(divergence), -np.inf, divergence)
    found = []
    for p in np.flatnonzero(values >= settings.threshold):
        lo, hi = max(0, p - radius), min(len(values), p + radius + 1)
        neighbourhood = values[lo:hi]
        if values[p] == neighbourhood.max() and p == lo + int(np.argmax(neighbourhood)):
            found.append(int(p))
    return found


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (0..1) between the rows of ``p`` and ``q``."""
    m = 0.5 * (p + q)
    return 0.5 * (_kl(p, m) + _kl(q, m))


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / np.where(q > 0, q, 1.0)), 0.0)
    return np.maximum(terms.sum(axis=-1), 0.0)


def _rounded(matrix: np.ndarray) -> list[list[float]]:
    return np.round(matrix, 4).tolist()


def _plain(value: Any) -> Any:
    """A numpy or polars scalar as a plain JSON value."""
    return value.item() if hasattr(value, "item") else value
