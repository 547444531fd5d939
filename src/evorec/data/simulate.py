"""Synthetic event logs whose users' interests drift, with the true interests kept.

Each item belongs to one topic and has a Zipf-like popularity within it. Each user holds a
topic mixture concentrated on one dominant topic; at every step the dominant topic switches
with probability ``drift`` and the mixture moves halfway towards the new target, so that a
user's recent items predict the next topic far better than their whole history. The next
item is drawn from the mixture times the popularity, mostly without repeats; behaviour types
(pv, cart, buy) and session-like timestamps make the log look like real e-commerce data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from evorec.data.schema import BEHAVIOR, ITEM, LINE, TIME, USER, RawData, canonical_events
from evorec.errors import ConfigError
from evorec.io import write_atomic

BEHAVIORS = ("pv", "cart", "buy")
BEHAVIOR_RATES = (0.88, 0.08, 0.04)
FOCUS = 0.8  # share of a target mixture on its dominant topic
MOVE = 0.5  # fraction of the way the mixture moves towards its target at each step
REPEAT = 0.03  # probability of consuming again one of the last few items
RECENT = 5  # how many of the last items a repeat picks from
START = 1_672_531_200  # 2023-01-01 UTC: first possible event
SPREAD_S = 150 * 86_400  # users start within this many seconds of START
SESSION_BREAK = 0.25  # probability that an event starts a new session
SESSION_GAP_S = 1.5 * 86_400  # mean gap between sessions
CLICK_GAP_S = 120.0  # mean gap between events of a session


@dataclass
class SimulatedData:
    """Simulated events (``raw``) and the true topic mixture behind every event (``truth``).

    ``raw.items`` has ``item_id``, ``topic`` and ``popularity`` (the item's probability
    within its topic). ``truth`` has one row per event, in the order of ``raw.events``:
    ``user_id``, ``step`` (0-based position in the user's sequence), ``timestamp``,
    ``topic`` (the topic the item was drawn from) and ``mixture`` (list of n_topics floats
    summing to 1: the user's interests when choosing that item).
    """

    raw: RawData
    truth: pl.DataFrame

    def save(self, directory: str | Path) -> Path:
        """Write ``events.csv``, ``items.csv`` and ``truth.parquet`` atomically; return the dir."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        events = self.raw.events.select(USER, ITEM, TIME, BEHAVIOR)
        write_atomic(directory / "events.csv", events.write_csv)
        if self.raw.items is not None:
            write_atomic(directory / "items.csv", self.raw.items.write_csv)
        write_atomic(directory / "truth.parquet", self.truth.write_parquet)
        return directory


def simulate(
    n_users: int = 1000,
    n_items: int = 500,
    n_topics: int = 10,
    min_len: int = 20,
    max_len: int = 60,
    drift: float = 0.1,
    popularity_skew: float = 1.0,
    seed: int = 0,
) -> SimulatedData:
    """Simulate ``n_users`` sequences of ``min_len``..``max_len`` events; deterministic by ``seed``.

    ``drift`` is the per-step probability that a user's dominant topic switches;
    ``popularity_skew`` is the Zipf exponent of item popularity within a topic.
    """
    _check_args(n_users, n_items, n_topics, min_len, max_len, drift, popularity_skew)
    rng = np.random.default_rng(seed)
    catalog = _Catalog.build(rng, n_items, n_topics, popularity_skew)
    prevalence = rng.dirichlet(np.full(n_topics, 5.0))
    lengths = rng.integers(min_len, max_len + 1, size=n_users)
    users, items, topics, mixtures = [], [], [], []
    for user, length in enumerate(lengths, start=1):
        seq_items, seq_topics, seq_mix = _user_sequence(
            rng, catalog, prevalence, int(length), drift
        )
        users.append(np.full(length, user))
        items.append(seq_items)
        topics.append(seq_topics)
        mixtures.append(seq_mix)
    user_ids = np.concatenate(users)
    n = user_ids.size
    timestamps = _timestamps(rng, lengths)
    behaviors = np.asarray(BEHAVIORS)[rng.choice(len(BEHAVIORS), size=n, p=BEHAVIOR_RATES)]
    events = canonical_events(
        pl.DataFrame(
            {
                USER: user_ids,
                ITEM: np.concatenate(items) + 1,
                TIME: timestamps,
                BEHAVIOR: behaviors,
                LINE: np.arange(2, n + 2),  # line in the saved events.csv (after its header)
            }
        )
    )
    step = np.concatenate([np.arange(length) for length in lengths])
    truth = pl.DataFrame(
        {
            USER: user_ids,
            "step": step,
            TIME: timestamps,
            "topic": np.concatenate(topics),
            "mixture": pl.Series(np.concatenate(mixtures)).cast(pl.List(pl.Float64)),
        }
    ).with_columns(pl.col(USER, "step", TIME, "topic").cast(pl.Int64))
    items_table = pl.DataFrame(
        {
            ITEM: np.arange(1, n_items + 1, dtype=np.int64),
            "topic": catalog.topic.astype(np.int64),
            "popularity": catalog.popularity,
        }
    )
    raw = RawData(events, items=items_table, has_time=True, name="simulated")
    return SimulatedData(raw=raw, truth=truth)


@dataclass
class _Catalog:
    """Items (0-based indices) by topic, with within-topic popularity."""

    topic: np.ndarray  # topic of each item
    popularity: np.ndarray  # probability of each item within its topic
    members: list[np.ndarray]  # items of each topic, most popular first
    cumulative: list[np.ndarray]  # cumulative popularity of ``members``

    @classmethod
    def build(cls, rng: np.random.Generator, n_items: int, n_topics: int, skew: float) -> _Catalog:
        topic = rng.permutation(np.arange(n_items) % n_topics)
        popularity = np.empty(n_items)
        members, cumulative = [], []
        for k in range(n_topics):
            items = rng.permutation(np.flatnonzero(topic == k))
            weights = 1.0 / np.arange(1, items.size + 1) ** skew
            weights /= weights.sum()
            popularity[items] = weights
            members.append(items)
            cumulative.append(np.cumsum(weights))
        return cls(topic, popularity, members, cumulative)

    def draw(self, rng: np.random.Generator, k: int, seen: set[int]) -> int:
        """A popularity-weighted item of topic ``k`` not in ``seen`` (any item if all are)."""
        items, cum = self.members[k], self.cumulative[k]
        for _ in range(8):
            pick = np.searchsorted(cum, rng.random() * cum[-1], side="right")
            item = int(items[min(int(pick), items.size - 1)])
            if item not in seen:
                return item
        weights = self._unseen_weights(items, seen)
        if not weights.any():  # the topic is exhausted: any unseen item, else any item
            items = np.arange(self.topic.size)
            weights = self._unseen_weights(items, seen)
            if not weights.any():
                weights = self.popularity
        return int(rng.choice(items, p=weights / weights.sum()))

    def _unseen_weights(self, items: np.ndarray, seen: set[int]) -> np.ndarray:
        unseen = np.fromiter((int(i) not in seen for i in items), dtype=bool, count=items.size)
        return self.popularity[items] * unseen


def _user_sequence(
    rng: np.random.Generator,
    catalog: _Catalog,
    prevalence: np.ndarray,
    length: int,
    drift: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items, drawn topics and mixtures (``length`` x n_topics) of one user."""
    n_topics = prevalence.size
    dominant = _draw(rng, prevalence)
    mixture = _target(rng, dominant, n_topics)
    target = mixture
    items = np.empty(length, dtype=np.int64)
    topics = np.empty(length, dtype=np.int64)
    mixtures = np.empty((length, n_topics))
    seen: set[int] = set()
    for t in range(length):
        if t > 0:
            if rng.random() < drift:
                others = prevalence.copy()
                others[dominant] = 0.0
                dominant = _draw(rng, others)
                target = _target(rng, dominant, n_topics)
            mixture = (1.0 - MOVE) * mixture + MOVE * target
            mixture /= mixture.sum()
        mixtures[t] = mixture
        topics[t] = _draw(rng, mixture)
        if t > 0 and rng.random() < REPEAT:
            items[t] = items[max(0, t - RECENT) + rng.integers(min(t, RECENT))]
            topics[t] = catalog.topic[items[t]]
        else:
            items[t] = catalog.draw(rng, int(topics[t]), seen)
        seen.add(int(items[t]))
    return items, topics, mixtures


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    """An index drawn with probability proportional to ``weights`` (faster than ``choice``)."""
    cdf = np.cumsum(weights)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), weights.size - 1)


def _target(rng: np.random.Generator, dominant: int, n_topics: int) -> np.ndarray:
    """A mixture with ``FOCUS`` on ``dominant`` and the rest spread by a sparse Dirichlet."""
    target = (1.0 - FOCUS) * rng.dirichlet(np.full(n_topics, 0.5))
    target[dominant] += FOCUS
    return target


def _timestamps(rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
    """Strictly increasing unix seconds per user, in sessions of quick events."""
    n = int(lengths.sum())
    gaps = np.where(
        rng.random(n) < SESSION_BREAK,
        3600.0 + rng.exponential(SESSION_GAP_S, size=n),
        1.0 + rng.exponential(CLICK_GAP_S, size=n),
    ).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps[first] = START + rng.integers(0, SPREAD_S, size=lengths.size)
    user_of = np.repeat(np.arange(lengths.size), lengths)
    total = np.cumsum(gaps)
    return total - (total[first] - gaps[first])[user_of]


def _check_args(
    n_users: int,
    n_items: int,
    n_topics: int,
    min_len: int,
    max_len: int,
    drift: float,
    popularity_skew: float,
) -> None:
    if n_users < 1 or n_topics < 2 or n_items < n_topics:
        raise ConfigError("simulate needs n_users >= 1, n_topics >= 2 and n_items >= n_topics")
    if not 1 <= min_len <= max_len:
        raise ConfigError(f"need 1 <= min_len <= max_len, got {min_len} and {max_len}")
    if not 0.0 <= drift <= 1.0:
        raise ConfigError(f"drift is a probability per step, got {drift}")
    if popularity_skew < 0:
        raise ConfigError(f"popularity_skew must be >= 0, got {popularity_skew}")
