"""Cleaning, k-core filtering, id mapping and chronological ordering of raw events."""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from evorec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from evorec.data.schema import BEHAVIOR, ITEM, LINE, TIME, USER, VALUE, RawData
from evorec.errors import DataError

MAX_REPORTED_LINES = 5
ROW = "_row"  # a temporary column


class PreprocessConfig(BaseModel):
    """Options of the preprocessing pipeline (part of the processed-data cache key)."""

    model_config = ConfigDict(extra="forbid")

    min_user_events: int = Field(5, ge=1, description="k-core: minimum events per user")
    min_item_events: int = Field(5, ge=1, description="k-core: minimum events per item")
    min_rating: float | None = Field(None, description="keep events with value >= this")
    max_user_events: int | None = Field(
        None, ge=1, description="drop users with more events than this (bots, crawlers)"
    )
    drop_duplicates: bool = True


@dataclass
class StepReport:
    step: str
    before: int
    after: int
    detail: str = ""

    @property
    def removed(self) -> int:
        return self.before - self.after


@dataclass
class PreprocessReport:
    steps: list[StepReport] = field(default_factory=list)

    def add(self, step: str, before: int, after: int, detail: str = "") -> None:
        self.steps.append(StepReport(step, before, after, detail))

    def to_dict(self) -> list[dict[str, object]]:
        return [
            {
                "step": s.step,
                "before": s.before,
                "after": s.after,
                "removed": s.removed,
                "detail": s.detail,
            }
            for s in self.steps
        ]


def _first_lines(df: pl.DataFrame) -> str:
    lines = df[LINE].head(MAX_REPORTED_LINES).to_list()
    return "lines " + ", ".join(map(str, lines)) + (" ..." if df.height > len(lines) else "")


def _nothing_left(bad: pl.DataFrame, report: PreprocessReport) -> str:
    """Why no event survived: the rows dropped as unreadable (by the column that failed),
    then what each later step removed."""
    read = report.steps[0].before
    later = [s for s in report.steps[2:] if s.removed]
    removed = ", ".join(
        f"{s.step} removed {s.removed:,}" + (f" ({s.detail})" if s.detail else "") for s in later
    )
    hint = (
        "lower min_user_events / min_item_events"
        if any(s.step == "k-core" for s in later)
        else "relax the preprocess options"
    )
    if bad.height == 0:
        return f"no events left after preprocessing: of {read:,} rows, {removed}; {hint}"
    # a reader nulls the user of every malformed row, so a null user alone means another field
    causes = [
        f"{count:,} with no parseable {column}"
        for column in (TIME, ITEM)
        if (count := bad[column].null_count())
    ]
    other = bad.filter(pl.col(TIME).is_not_null() & pl.col(ITEM).is_not_null()).height
    if other:
        causes.append(f"{other:,} with no user or another malformed field")
    message = (
        f"no events left after preprocessing: {bad.height:,} of {read:,} rows were dropped as "
        f"unreadable ({', '.join(causes)}; {_first_lines(bad)})"
    )
    if later:
        return f"{message}, then {removed}; fix the unreadable rows or {hint}"
    return f"{message}; fix the unreadable rows"


def drop_exact_duplicates(events: pl.DataFrame) -> pl.DataFrame:
    """Keep the first of rows equal in every event field, in order.

    Only rows whose combined field hash occurs more than once can have a duplicate; the
    exact comparison runs on those alone (equal rows hash alike, so a collision costs time,
    never a row)."""
    fields = [USER, ITEM, TIME, BEHAVIOR, VALUE]
    row_hash = reduce(
        operator.xor, (pl.col(name).hash(seed) for seed, name in enumerate(fields))
    ).alias(ROW)
    shared = events.select(row_hash).group_by(ROW).len().filter(pl.col("len") > 1)[ROW]
    if shared.is_empty():
        return events
    candidate = row_hash.is_in(shared.implode())
    firsts = (
        events.with_row_index(ROW)
        .filter(candidate)
        .unique(subset=fields, keep="first", maintain_order=True)[ROW]
    )
    row = pl.int_range(pl.len(), dtype=firsts.dtype)
    return events.filter(~candidate | row.is_in(firsts.implode()))


def dense_codes(ids: pl.Series) -> np.ndarray:
    """Non-negative integer codes, equal for equal ids: the ids themselves (less the
    smallest) when they are integers in a compact range, else their dense rank."""
    if ids.dtype.is_integer():
        low, high = ids.min(), ids.max()
        if high - low < 4 * ids.len() + 1_000_000:  # bounded count arrays
            return (ids - low).to_numpy()
    return (ids.rank("dense") - 1).to_numpy()


def k_core(events: pl.DataFrame, min_user: int, min_item: int) -> tuple[pl.DataFrame, int]:
    """Drop items with fewer than ``min_item`` events, then users with fewer than
    ``min_user``, until both hold; returns the events left and the rounds taken."""
    if events.height == 0:
        return events, 1
    users, items = dense_codes(events[USER]), dense_codes(events[ITEM])
    keep = np.ones(events.height, dtype=bool)
    rounds, left = 0, events.height
    while True:
        rounds += 1
        keep &= np.bincount(items[keep], minlength=items.max() + 1)[items] >= min_item
        keep &= np.bincount(users[keep], minlength=users.max() + 1)[users] >= min_user
        now = int(keep.sum())
        if now == left:
            return (events if now == events.height else events.filter(keep)), rounds
        left = now


def preprocess(raw: RawData, config: PreprocessConfig | None = None) -> Dataset:
    """Clean ``raw`` events and turn them into a :class:`Dataset` with a step report."""
    config = config or PreprocessConfig()
    report = PreprocessReport()
    events = raw.events
    source = raw.sources[0] if raw.sources else raw.name
    report.add("read", events.height, events.height, f"from {source}")

    required = [USER, ITEM, TIME]
    bad = events.filter(pl.any_horizontal(pl.col(c).is_null() for c in required))
    if bad.height:
        events = events.filter(pl.all_horizontal(pl.col(c).is_not_null() for c in required))
    report.add(
        "drop missing/unparseable",
        events.height + bad.height,
        events.height,
        _first_lines(bad) if bad.height else "",
    )

    # behaviours as an enum: filters and sorts copy codes instead of strings
    labels = events[BEHAVIOR].drop_nulls().unique().sort()
    events = events.with_columns(pl.col(BEHAVIOR).cast(pl.Enum(labels)))

    if config.drop_duplicates:
        before = events.height
        events = drop_exact_duplicates(events)
        report.add("drop exact duplicates", before, events.height)

    if config.min_rating is not None:
        before = events.height
        events = events.filter(pl.col(VALUE) >= config.min_rating)
        report.add("rating threshold", before, events.height, f"value >= {config.min_rating}")

    if config.max_user_events is not None:
        before = events.height
        events = events.filter(pl.len().over(USER) <= config.max_user_events)
        report.add(
            "drop outlier users",
            before,
            events.height,
            f"more than {config.max_user_events} events",
        )

    before = events.height
    events, rounds = k_core(events, config.min_user_events, config.min_item_events)
    report.add(
        "k-core",
        before,
        events.height,
        f"users >= {config.min_user_events}, items >= {config.min_item_events}, {rounds} rounds",
    )
    if events.height == 0:
        raise DataError(_nothing_left(bad, report), path=source)

    first_seen = events if events[LINE].is_sorted() else events.sort(LINE)
    user_ids = first_seen[USER].unique(maintain_order=True)
    item_ids = first_seen[ITEM].unique(maintain_order=True)
    behaviors = events[BEHAVIOR].drop_nulls().unique().cast(pl.String).sort().to_list()

    user_index = pl.DataFrame({USER: user_ids, USER_IDX: pl.int_range(len(user_ids), eager=True)})
    item_index = pl.DataFrame({ITEM: item_ids, ITEM_IDX: pl.int_range(len(item_ids), eager=True)})
    mapped = (
        events.join(user_index, on=USER, how="left", maintain_order="left")
        .join(item_index, on=ITEM, how="left", maintain_order="left")
        .sort([USER_IDX, TIME, LINE], maintain_order=True)
        .select(
            pl.col(USER_IDX).cast(pl.Int64),
            pl.col(ITEM_IDX).cast(pl.Int64),
            pl.col(TIME),
            pl.col(BEHAVIOR).cast(pl.String).cast(pl.Enum(behaviors)).to_physical().cast(pl.Int64),
            pl.col(VALUE),
        )
    )
    report.add(
        "map ids + chronological order",
        events.height,
        mapped.height,
        f"{len(user_ids)} users, {len(item_ids)} items",
    )

    items = _index_side_table(raw.items, ITEM, item_index, ITEM_IDX)
    users = _index_side_table(raw.users, USER, user_index, USER_IDX)
    return Dataset(
        events=mapped,
        user_ids=user_ids,
        item_ids=item_ids,
        items=items,
        users=users,
        behaviors=behaviors,
        has_time=raw.has_time,
        name=raw.name,
        meta={"preprocess": config.model_dump(), "report": report.to_dict()},
    )


def _index_side_table(
    table: pl.DataFrame | None, key: str, index: pl.DataFrame, idx: str
) -> pl.DataFrame | None:
    """Keep the rows of an item/user table that survived preprocessing, with internal ids."""
    if table is None or key not in table.columns:
        return None
    keyed = table.with_columns(pl.col(key).cast(index[key].dtype, strict=False))
    return index.join(keyed.unique(key, keep="first"), on=key, how="left").sort(idx)


def source_fingerprint(path: Path) -> str:
    """Content hash of a data file or of every file in a data directory."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if path.is_file():
        files += sorted(p for p in path.parent.glob(f"{path.stem}_*") if p.is_file())
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "blake2b").digest())
    return digest.hexdigest()


def cache_key(
    path: Path, fmt: str, columns: dict[str, str] | None, config: PreprocessConfig
) -> str:
    options = json.dumps(
        {"format": fmt, "columns": columns, "preprocess": config.model_dump()}, sort_keys=True
    )
    return hashlib.blake2b(
        (source_fingerprint(path) + options).encode(), digest_size=12
    ).hexdigest()
