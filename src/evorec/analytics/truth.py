"""Timelines against known interests (the simulator's ``truth``): true shifts, matching of
detected shift points, correlation with the true mixture, and the lag of the top-N.

The simulator moves a user's mixture halfway to a target at every step (``m_t = (m_{t-1} +
target_t) / 2``), so the target, and with it the dominant topic, is ``2 m_t - m_{t-1}``;
a true shift is a step whose dominant topic differs from the step before.
"""

from __future__ import annotations

import numpy as np


def true_dominant(mixtures: np.ndarray) -> np.ndarray:
    """The dominant (target) topic at each step of one user's ``[T, topics]`` mixtures."""
    target = mixtures.copy()
    target[1:] = 2.0 * mixtures[1:] - mixtures[:-1]
    return target.argmax(axis=1)


def true_shifts(dominant: np.ndarray) -> np.ndarray:
    """Steps whose dominant topic differs from the step before."""
    return np.flatnonzero(dominant[1:] != dominant[:-1]) + 1


def match_shifts(detected: np.ndarray, true: np.ndarray, tolerance: int) -> tuple[int, int]:
    """One-to-one matches within ``tolerance`` steps, greedily by distance: returns the
    number of detected points matched (precision's numerator) and of true shifts matched
    (recall's); the two are equal."""
    pairs = sorted(
        (abs(int(d) - int(t)), i, j)
        for i, d in enumerate(detected)
        for j, t in enumerate(true)
        if abs(int(d) - int(t)) <= tolerance
    )
    used_detected: set[int] = set()
    used_true: set[int] = set()
    for _, i, j in pairs:
        if i not in used_detected and j not in used_true:
            used_detected.add(i)
            used_true.add(j)
    return len(used_detected), len(used_true)


def adoption_lags(share: np.ndarray, dominant: np.ndarray, level: float = 0.5) -> list[int | None]:
    """For each true shift at step ``s`` to topic ``k``: the events seen from ``s`` on
    (``t - s + 1``) when ``share[t, k]`` (the top-N's share after event ``t``) first reaches
    ``level``, before the next shift; None when it never does."""
    shifts = true_shifts(dominant)
    ends = np.append(shifts[1:], len(dominant))[: len(shifts)]
    lags: list[int | None] = []
    for start, end in zip(shifts, ends, strict=True):
        reached = np.flatnonzero(share[start:end, dominant[start]] >= level)
        lags.append(int(reached[0]) + 1 if reached.size else None)
    return lags


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays, over every cell."""
    a, b = np.ravel(a), np.ravel(b)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0
