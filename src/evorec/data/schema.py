"""The canonical event table and the containers every reader returns.

Raw events (as read, original ids) are a Polars DataFrame with columns:

- ``user_id``, ``item_id``: original ids, Int64 or Utf8 as found in the source;
- ``timestamp``: Int64, unix seconds; for sources that only give order it is the
  position of the event in the user's sequence (``RawData.has_time`` is then False);
- ``behavior``: Utf8 behaviour type (e.g. ``pv``, ``cart``, ``buy``), null when absent;
- ``value``: Float64 (rating, play count, price...), null when absent;
- ``line``: Int64, 1-based line (or row) number in the source file, used to report bad
  rows and to keep file order among events with equal timestamps.

Rows that could not be parsed keep a null in the offending column; preprocessing drops
them and reports their line numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

USER = "user_id"
ITEM = "item_id"
TIME = "timestamp"
BEHAVIOR = "behavior"
VALUE = "value"
LINE = "line"

EVENT_COLUMNS = (USER, ITEM, TIME, BEHAVIOR, VALUE, LINE)


@dataclass
class RawData:
    """What a reader returns: events plus optional item and user tables (original ids)."""

    events: pl.DataFrame
    items: pl.DataFrame | None = None  # keyed by ``item_id``: attributes, ``title``, ``text``...
    users: pl.DataFrame | None = None  # keyed by ``user_id``: profile fields
    has_time: bool = True
    name: str = "dataset"
    sources: list[Path] = field(default_factory=list)


def canonical_events(df: pl.DataFrame) -> pl.DataFrame:
    """Return ``df`` with exactly the canonical columns and dtypes, adding missing optional ones."""
    n = df.height
    cols = {}
    for name in (USER, ITEM):
        cols[name] = df[name]
    cols[TIME] = df[TIME].cast(pl.Int64, strict=False) if TIME in df.columns else None
    if cols[TIME] is None:
        cols[TIME] = pl.Series(TIME, [None] * n, dtype=pl.Int64)
    cols[BEHAVIOR] = (
        df[BEHAVIOR].cast(pl.Utf8)
        if BEHAVIOR in df.columns
        else pl.Series(BEHAVIOR, [None] * n, dtype=pl.Utf8)
    )
    cols[VALUE] = (
        df[VALUE].cast(pl.Float64, strict=False)
        if VALUE in df.columns
        else pl.Series(VALUE, [None] * n, dtype=pl.Float64)
    )
    cols[LINE] = (
        df[LINE].cast(pl.Int64)
        if LINE in df.columns
        else pl.Series(LINE, range(1, n + 1), dtype=pl.Int64)
    )
    return pl.DataFrame([cols[c].alias(c) for c in EVENT_COLUMNS])
