"""Ragged per-user sequences stored in CSR form (offsets + flat arrays)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Histories:
    """Chronological item sequences of several users.

    Row ``r`` holds ``items[offsets[r]:offsets[r + 1]]`` (internal item indices), with the
    aligned ``timestamps`` and ``behaviors`` (behaviour codes) when the data has them.
    ``users[r]`` is the internal user of row ``r`` when known (histories taken from a
    dataset), None for raw histories.
    """

    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None
    behaviors: np.ndarray | None = None
    users: np.ndarray | None = None

    @classmethod
    def from_lists(
        cls,
        items: Sequence[Sequence[int]],
        timestamps: Sequence[Sequence[int]] | None = None,
    ) -> Histories:
        lengths = np.fromiter((len(s) for s in items), dtype=np.int64, count=len(items))
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((i for s in items for i in s), dtype=np.int64, count=int(offsets[-1]))
        times = None
        if timestamps is not None:
            times = np.fromiter(
                (t for s in timestamps for t in s), dtype=np.int64, count=int(offsets[-1])
            )
        return cls(offsets, flat, times)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> np.ndarray:
        return self.items[self.offsets[row] : self.offsets[row + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def rows(self) -> np.ndarray:
        """The row of every event in the flat arrays."""
        return np.repeat(np.arange(len(self)), self.lengths)

    def to_lists(self) -> list[list[int]]:
        return [self[r].tolist() for r in range(len(self))]

    def _select(
        self, positions: np.ndarray, offsets: np.ndarray, users: np.ndarray | None
    ) -> Histories:
        return Histories(
            offsets,
            self.items[positions],
            None if self.timestamps is None else self.timestamps[positions],
            None if self.behaviors is None else self.behaviors[positions],
            users,
        )

    def take(self, rows: np.ndarray) -> Histories:
        """The histories of ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return self._select(positions, offsets, None if self.users is None else self.users[rows])

    def slice_each(self, start: np.ndarray | int, stop: np.ndarray | int) -> Histories:
        """Per row, the events ``[start, stop)``; negative bounds count from the row's end."""
        lengths = self.lengths
        start = np.broadcast_to(np.asarray(start, dtype=np.int64), lengths.shape)
        stop = np.broadcast_to(np.asarray(stop, dtype=np.int64), lengths.shape)
        start = np.clip(np.where(start < 0, lengths + start, start), 0, lengths)
        stop = np.clip(np.where(stop < 0, lengths + stop, stop), 0, lengths)
        new_lengths = np.maximum(stop - start, 0)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(new_lengths, out=offsets[1:])
        base = self.offsets[:-1] + start
        positions = np.repeat(base - offsets[:-1], new_lengths) + np.arange(offsets[-1])
        return self._select(positions, offsets, self.users)

    def last(self, n: int) -> Histories:
        """Each row cut to its last ``n`` events."""
        lengths = self.lengths
        # start = length - n (not -n: -0 would mean "from the start" and keep everything)
        return self.slice_each(lengths - np.minimum(lengths, max(n, 0)), lengths)

    def windows(self, width: int, stride: int) -> Histories:
        """Every row cut into windows of at most ``width`` events that cover it whole: the
        last window ends at the row's end, each earlier one ``stride`` events before the
        next (``stride < width`` makes consecutive windows overlap by ``width - stride``)."""
        if not 0 < stride <= width:
            raise ValueError(f"need 0 < stride <= width, got stride {stride}, width {width}")
        lengths = self.lengths
        counts = 1 + (np.maximum(lengths - width, 0) + stride - 1) // stride
        rows = np.repeat(np.arange(len(self)), counts)
        from_end = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        stop = lengths[rows] - from_end * stride
        return self.take(rows).slice_each(np.maximum(stop - width, 0), stop)

    def padded_events(self, max_len: int) -> PaddedEvents:
        """The last ``max_len`` events of each row, right-padded: items (``item + 1``,
        0 = padding) with the aligned timestamps and behaviours, and the row lengths."""
        cut = self.last(max_len)
        return PaddedEvents(
            _pad(cut, cut.items + 1),
            cut.lengths,
            None if cut.timestamps is None else _pad(cut, cut.timestamps),
            None if cut.behaviors is None else _pad(cut, cut.behaviors + 1),
        )


@dataclass
class PaddedEvents:
    """A right-padded batch of histories, ``[rows, L]`` arrays aligned position by position.

    ``items`` holds ``item + 1`` (0 = padding); ``timestamps`` holds the event times (0 at
    padding); ``behaviors`` holds ``code + 1`` (0 = padding or unknown behaviour). The last
    two are None when the histories lack them.
    """

    items: np.ndarray
    lengths: np.ndarray
    timestamps: np.ndarray | None = None
    behaviors: np.ndarray | None = None


def _pad(cut: Histories, values: np.ndarray) -> np.ndarray:
    """``values`` (one per event of ``cut``) as a right-padded ``[rows, L]`` array."""
    lengths = cut.lengths
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(cut), width), dtype=np.int64)
    cols = np.arange(len(cut.items)) - np.repeat(cut.offsets[:-1], lengths)
    out[cut.rows, cols] = values
    return out
