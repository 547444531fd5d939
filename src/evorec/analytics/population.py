"""The population's interests: how often users shift, which categories gain and lose over
time, and how far the recommendations follow and cover the catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from evorec.analytics.categories import ItemCategories
from evorec.analytics.timeline import (
    TOP_N,
    ShiftSettings,
    shift_divergence,
    shift_points,
    top_items,
)
from evorec.data.histories import Histories
from evorec.errors import DataError
from evorec.models.base import Recommender

PERIODS = 8
MAX_USERS = 1000
CHUNK = 256  # histories scored at once


@dataclass
class Population:
    """Summary over ``users`` sampled histories (``events`` events in all).

    ``shift_rate``: shifts per 100 events; ``users_shifting``: share of users with at least
    one; ``periods``: the start of each period (a date, or an event position for data
    without times); ``trend[p, c]``: share of category ``c`` among the events of period
    ``p``; ``recent``: the category mix of every user's last ``window`` events;
    ``recommended``: the category mix of every user's top-N now; ``follow``: mean share of
    a user's top-N in the category of most of their last ``window`` events; ``coverage``:
    distinct recommended items over the catalogue.
    """

    categories: list[str]
    users: int
    events: int
    shifts: int
    shift_rate: float
    users_shifting: float
    periods: list[str]
    trend: np.ndarray
    recent: np.ndarray
    recommended: np.ndarray
    follow: float
    coverage: float
    top_n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "categories": self.categories,
            "users": self.users,
            "events": self.events,
            "shifts": self.shifts,
            "shift_rate": round(self.shift_rate, 4),
            "users_shifting": round(self.users_shifting, 4),
            "periods": self.periods,
            "trend": np.round(self.trend, 4).tolist(),
            "recent": np.round(self.recent, 4).tolist(),
            "recommended": np.round(self.recommended, 4).tolist(),
            "follow": round(self.follow, 4),
            "coverage": round(self.coverage, 4),
            "top_n": self.top_n,
        }


def population_summary(
    model: Recommender,
    histories: Histories,
    categories: ItemCategories,
    *,
    top_n: int = TOP_N,
    settings: ShiftSettings | None = None,
    max_users: int = MAX_USERS,
    periods: int = PERIODS,
    by_time: bool = True,
    seed: int = 0,
) -> Population:
    """The summary over at most ``max_users`` non-empty rows of ``histories`` (a seeded
    sample when there are more); periods by time when ``by_time`` and the histories have
    timestamps (a dataset's ``has_time``), else by position in the history."""
    settings = settings or ShiftSettings()
    rows = np.flatnonzero(histories.lengths > 0)
    if rows.size == 0:
        raise DataError("no user has events", field="histories")
    if rows.size > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    sample = histories.take(rows)
    member = categories.membership
    shifts = shifting = 0
    for r in range(len(sample)):
        found = shift_points(shift_divergence(member[sample[r]], settings.window), settings)
        shifts += len(found)
        shifting += bool(found)
    top = np.vstack(
        [
            top_items(model, sample.take(np.arange(s, min(s + CHUNK, len(sample)))), top_n)
            for s in range(0, len(sample), CHUNK)
        ]
    )
    recent_rows = sample.last(settings.window)
    recent = np.vstack([categories.mix(recent_rows[r]) for r in range(len(sample))])
    recommended = member[top].mean(axis=1)
    dominant = recent.argmax(axis=1)
    labels, trend = _trend(sample, member, periods, by_time)
    return Population(
        categories=categories.names,
        users=len(sample),
        events=int(sample.lengths.sum()),
        shifts=shifts,
        shift_rate=100.0 * shifts / max(int(sample.lengths.sum()), 1),
        users_shifting=shifting / len(sample),
        periods=labels,
        trend=trend,
        recent=recent.mean(axis=0),
        recommended=recommended.mean(axis=0),
        follow=float(recommended[np.arange(len(sample)), dominant].mean()),
        coverage=np.unique(top).size / member.shape[0],
        top_n=top_n,
    )


def _trend(
    sample: Histories, member: np.ndarray, periods: int, by_time: bool
) -> tuple[list[str], np.ndarray]:
    """Period labels and the category share of each period's events (equal-count periods,
    by timestamp, or by position in the history)."""
    by_time = by_time and sample.timestamps is not None
    if by_time:
        key = sample.timestamps.astype(np.float64)
    else:
        key = (
            np.arange(len(sample.items)) - np.repeat(sample.offsets[:-1], sample.lengths)
        ).astype(np.float64)
    edges = np.unique(np.quantile(key, np.linspace(0, 1, periods + 1)[:-1]))
    period = np.searchsorted(edges, key, side="right") - 1
    shares = np.zeros((len(edges), member.shape[1]))
    np.add.at(shares, period, member[sample.items])
    shares /= np.maximum(shares.sum(axis=1, keepdims=True), 1e-12)
    if by_time:
        labels = [
            datetime.fromtimestamp(int(e), tz=timezone.utc).strftime("%Y-%m-%d") for e in edges
        ]
    else:
        labels = [f"event {int(e) + 1}" for e in edges]
    return labels, shares
