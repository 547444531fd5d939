"""Histories (CSR ragged sequences) against a brute-force reference on Python lists."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evorec.data.histories import Histories

ragged = st.lists(st.lists(st.integers(0, 50), max_size=8), max_size=7)
SETTINGS = settings(max_examples=60, deadline=None)


def with_times(lists: list[list[int]]) -> Histories:
    """Histories whose timestamps and behaviours encode (row, position) so that every
    selection can be checked to move the aligned arrays together with the items."""
    times = [[1000 * r + p for p in range(len(s))] for r, s in enumerate(lists)]
    h = Histories.from_lists(lists, times)
    h.behaviors = h.timestamps * 7 + 3
    return h


def check_aligned(h: Histories, items: list[list[int]], times: list[list[int]]) -> None:
    assert h.to_lists() == items
    assert len(h) == len(items)
    assert h.lengths.tolist() == [len(s) for s in items]
    assert h.offsets[0] == 0 and h.offsets[-1] == len(h.items)
    assert h.timestamps is not None and h.behaviors is not None
    assert [h.timestamps[h.offsets[r] : h.offsets[r + 1]].tolist() for r in range(len(h))] == times
    assert h.behaviors.tolist() == [t * 7 + 3 for t in h.timestamps.tolist()]


def ref_times(lists: list[list[int]]) -> list[list[int]]:
    return [[1000 * r + p for p in range(len(s))] for r, s in enumerate(lists)]


@given(ragged)
@SETTINGS
def test_from_lists_round_trip(lists):
    h = Histories.from_lists(lists)
    assert h.to_lists() == lists
    assert h.lengths.tolist() == [len(s) for s in lists]
    assert h.timestamps is None and h.behaviors is None
    for r, s in enumerate(lists):
        assert h[r].tolist() == s
    check_aligned(with_times(lists), lists, ref_times(lists))


def test_from_lists_timestamps_aligned():
    h = Histories.from_lists([[5, 6], [], [7]], [[10, 11], [], [12]])
    assert h.offsets.tolist() == [0, 2, 2, 3]
    assert h.items.tolist() == [5, 6, 7]
    assert h.timestamps.tolist() == [10, 11, 12]


@given(ragged, st.data())
@SETTINGS
def test_take(lists, data):
    rows = data.draw(st.lists(st.integers(0, len(lists) - 1), max_size=10)) if lists else []
    h = with_times(lists)
    out = h.take(np.array(rows, dtype=np.int64))
    times = ref_times(lists)
    check_aligned(out, [lists[r] for r in rows], [times[r] for r in rows])


bound = st.integers(-12, 12)


@given(ragged, bound, bound)
@SETTINGS
def test_slice_each_scalar_bounds(lists, start, stop):
    """Negative bounds count from each row's end, out-of-range bounds clip: Python slices."""
    out = with_times(lists).slice_each(start, stop)
    times = ref_times(lists)
    check_aligned(out, [s[start:stop] for s in lists], [t[start:stop] for t in times])


@given(ragged, st.data())
@SETTINGS
def test_slice_each_per_row_bounds(lists, data):
    n = len(lists)
    starts = data.draw(st.lists(bound, min_size=n, max_size=n))
    stops = data.draw(st.lists(bound, min_size=n, max_size=n))
    out = with_times(lists).slice_each(np.array(starts), np.array(stops))
    times = ref_times(lists)
    expected = [s[a:b] for s, a, b in zip(lists, starts, stops, strict=True)]
    expected_t = [t[a:b] for t, a, b in zip(times, starts, stops, strict=True)]
    check_aligned(out, expected, expected_t)


@given(ragged, st.data())
@SETTINGS
def test_slice_each_mixed_scalar_and_array(lists, data):
    n = len(lists)
    stops = data.draw(st.lists(bound, min_size=n, max_size=n))
    out = with_times(lists).slice_each(-3, np.array(stops, dtype=np.int64))
    assert out.to_lists() == [s[-3:b] for s, b in zip(lists, stops, strict=True)]


@given(ragged, st.integers(0, 10))
@SETTINGS
def test_last(lists, n):
    out = with_times(lists).last(n)
    times = ref_times(lists)
    # The last n events: an empty row for n = 0 (unlike the Python idiom s[-0:]).
    expected = [s[len(s) - min(len(s), n) :] for s in lists]
    expected_t = [t[len(t) - min(len(t), n) :] for t in times]
    check_aligned(out, expected, expected_t)


def test_last_zero_is_empty():
    h = Histories.from_lists([[1, 2, 3], [4]])
    assert h.last(0).to_lists() == [[], []]
    assert h.last(1).to_lists() == [[3], [4]]


@given(ragged, st.integers(2, 6), st.data())
@SETTINGS
def test_windows_cover_every_event(lists, width, data):
    stride = data.draw(st.integers(1, width))
    h = with_times(lists)
    out = h.windows(width, stride)
    times = ref_times(lists)
    rows = out.timestamps // 1000 if len(out.items) else np.zeros(0, np.int64)
    for r, s in enumerate(lists):
        if not s:
            continue
        mine = [w for w in range(len(out)) if out.lengths[w] and rows[out.offsets[w]] == r]
        windows = [out.to_lists()[w] for w in mine]
        # the last window ends at the row's end; each earlier one ends stride events before
        expected = []
        stop = len(s)
        while True:
            expected.append((max(stop - width, 0), stop))
            if stop - width <= 0:
                break
            stop -= stride
        assert windows == [s[a:b] for a, b in expected]
        assert [out.timestamps[out.offsets[w] : out.offsets[w + 1]].tolist() for w in mine] == [
            times[r][a:b] for a, b in expected
        ]
        # with stride = width - 1, every event but the first is a next-item target once
        if stride == width - 1:
            targets = sorted(t for w in windows for t in w[1:])
            assert targets == sorted(s[1:])


def test_windows_hand_case():
    h = Histories.from_lists([list(range(7)), [9], []])
    assert h.windows(4, 3).to_lists() == [[3, 4, 5, 6], [0, 1, 2, 3], [9], []]
    with pytest.raises(ValueError, match="stride"):
        h.windows(3, 4)


@given(ragged, st.integers(1, 10))
@SETTINGS
def test_padded(lists, max_len):
    padded = Histories.from_lists(lists).padded_events(max_len)
    out, lengths = padded.items, padded.lengths
    cut = [s[-max_len:] for s in lists]
    width = max([len(c) for c in cut] + [1])
    assert out.shape == (len(lists), width)
    assert out.dtype == np.int64
    assert lengths.tolist() == [len(c) for c in cut]
    for r, c in enumerate(cut):
        # Right padding with 0; items shifted by +1 so that item 0 is not padding.
        assert out[r].tolist() == [i + 1 for i in c] + [0] * (width - len(c))


def test_padded_hand_case():
    h = Histories.from_lists([[0, 1, 2, 3], [], [7]])
    padded = h.padded_events(3)
    assert padded.items.tolist() == [[2, 3, 4], [0, 0, 0], [8, 0, 0]]
    assert padded.lengths.tolist() == [3, 0, 1]
    padded = Histories.from_lists([[], []]).padded_events(5)
    assert padded.items.tolist() == [[0], [0]]
    assert padded.lengths.tolist() == [0, 0]


@pytest.mark.parametrize("rows", [[], [2, 0], [1, 1, 1]])
def test_take_hand_cases(rows):
    h = Histories.from_lists([[1, 2], [3], [4, 5, 6]])
    ref = [[1, 2], [3], [4, 5, 6]]
    assert h.take(np.array(rows, dtype=np.int64)).to_lists() == [ref[r] for r in rows]
