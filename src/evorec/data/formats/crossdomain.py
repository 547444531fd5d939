"""Cross-domain pairs: one domain of a DisenCDR pair (``train.txt`` + ``test_original.txt``)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from evorec.data.formats.registry import Format, ReadOptions, register
from evorec.data.formats.rows import events_from_table, read_rows
from evorec.data.schema import ITEM, TIME, USER, RawData, canonical_events


def _read_disencdr(path: Path, options: ReadOptions) -> RawData:
    """Read one domain of a DisenCDR cross-domain pair (Cao et al. 2022): ``train.txt``
    (``user<TAB>item<TAB>1``) followed by ``test_original.txt`` (each user's held-out item)
    in the same directory. The data has no times: a user's events keep file order, the
    held-out items last, so that leave-one-out tests on them. Users share ids across the
    two domains of a pair (``sport_cloth`` and ``cloth_sport``); items do not."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
    d = path if path.is_dir() else path.parent
    parts = []
    for name in ("train.txt", "test_original.txt"):
        df, line = read_rows(
            d / name, "\t", ["user", "item", "rating"], skip_header=False, encoding=encoding
        )
        events, _ = events_from_table(d / name, df, line, {USER: "user", ITEM: "item"}, on_bad_rows)
        parts.append(events)
    train, test = parts
    test = test.with_columns(pl.col(TIME) + train[TIME].max() + 1)
    events = canonical_events(pl.concat([train, test]))
    return RawData(
        events, has_time=False, name=d.name, sources=[d / "train.txt", d / "test_original.txt"]
    )


register(
    Format(
        "disencdr",
        _read_disencdr,
        lambda probe: {"train.txt", "test_original.txt"} <= probe.names,
        "DisenCDR train.txt and test_original.txt",
        reads_directory=True,
    )
)
