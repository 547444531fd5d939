"""Taobao UserBehavior: ``user,item,category,behavior,timestamp`` rows, no header; each
item's category as the item table."""

from __future__ import annotations

from pathlib import Path

from evorec.data.formats.registry import Format, Probe, ReadOptions, register
from evorec.data.formats.rows import (
    DELIMITED_SUFFIXES,
    category_table,
    events_from_table,
    field_count_check,
    read_rows,
)
from evorec.data.schema import BEHAVIOR, ITEM, TIME, USER, RawData

TAOBAO_BEHAVIORS = ("pv", "cart", "fav", "buy")


def _read_taobao(path: Path, options: ReadOptions) -> RawData:
    """Read Taobao UserBehavior (``user,item,category,behavior,timestamp``, no header)."""
    on_bad_rows, encoding = options.on_bad_rows, options.encoding
    names = ["user", "item", "category", "behavior", "timestamp"]
    df, line = read_rows(path, ",", names, skip_header=False, encoding=encoding)
    mapping = {USER: "user", ITEM: "item", BEHAVIOR: "behavior", TIME: "timestamp"}
    describe = field_count_check(path, ",", len(names), encoding, header=False)
    events, _ = events_from_table(path, df, line, mapping, on_bad_rows, describe=describe)
    items = category_table(events, df["category"])
    return RawData(events, items=items, has_time=True, name=path.stem, sources=[path])


def _is_taobao(probe: Probe) -> bool:
    fields = probe.head[0].split(",") if probe.suffix in DELIMITED_SUFFIXES and probe.head else []
    return len(fields) == 5 and fields[3] in TAOBAO_BEHAVIORS


register(Format("taobao", _read_taobao, _is_taobao, "Taobao UserBehavior rows"))
