"""Load a dataset end to end: read, preprocess, cache the result as Parquet."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

from evorec.data.dataset import Dataset
from evorec.data.download import data_home
from evorec.data.formats import DEFAULT_ENCODING, check_encoding, read_events
from evorec.data.preprocess import PreprocessConfig, cache_key, preprocess
from evorec.data.schema import BEHAVIOR, ITEM, TIME, USER, VALUE, RawData, canonical_events
from evorec.errors import DataError


def load_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    columns: dict[str, str] | None = None,
    preprocess_config: PreprocessConfig | dict[str, Any] | None = None,
    on_bad_rows: str = "drop",
    encoding: str = DEFAULT_ENCODING,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Read and preprocess ``path`` (text files in ``encoding``); a second call with the
    same content and options is served from the Parquet cache under ``<data home>/processed``."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path=path)
    config = PreprocessConfig.model_validate(preprocess_config or {})

    def read() -> Dataset:
        raw = read_events(path, format, columns=columns, on_bad_rows=on_bad_rows, encoding=encoding)
        return preprocess(raw, config)

    if not cache:
        return read()
    codec = check_encoding(encoding)
    key = cache_key(path, f"{format}/{on_bad_rows}/{codec}", columns, config)
    target = Path(cache_dir) if cache_dir else data_home() / "processed"
    target = target / f"{path.stem}-{key}"
    if target.exists():
        try:
            dataset = Dataset.load(target)
            dataset.meta["cache"] = {"path": str(target), "hit": True}
            return dataset
        except (DataError, OSError, pl.exceptions.PolarsError):
            shutil.rmtree(target, ignore_errors=True)
    dataset = read()
    dataset.save(target)
    dataset.meta["cache"] = {"path": str(target), "hit": False}
    return dataset


def from_frame(
    frame: Any,
    *,
    user: str = USER,
    item: str = ITEM,
    timestamp: str | None = TIME,
    behavior: str | None = None,
    value: str | None = None,
    items: Any = None,
    users: Any = None,
    preprocess_config: PreprocessConfig | dict[str, Any] | None = None,
    name: str = "frame",
) -> Dataset:
    """Build a dataset from a pandas or Polars DataFrame of events, with optional item
    (keyed by ``item_id``) and user (keyed by ``user_id``: profile columns) tables.

    Without a timestamp column, row order within each user is taken as time."""
    df = _polars(frame)
    missing = [c for c in (user, item) if c not in df.columns]
    if missing:
        raise DataError(f"column(s) {', '.join(missing)} not in the frame", field=missing[0])
    has_time = timestamp is not None and timestamp in df.columns
    mapping = {user: USER, item: ITEM}
    for source, canonical in ((timestamp, TIME), (behavior, BEHAVIOR), (value, VALUE)):
        if source is not None and source in df.columns:
            mapping[source] = canonical
    df = df.select([pl.col(s).alias(c) for s, c in mapping.items()])
    if has_time and df.schema[TIME] in (pl.Datetime, pl.Date):
        df = df.with_columns(pl.col(TIME).dt.epoch("s"))
    if not has_time:
        df = df.with_columns(pl.int_range(pl.len()).over(USER).alias(TIME))
    raw = RawData(
        canonical_events(df),
        items=_polars(items),
        users=_polars(users),
        has_time=has_time,
        name=name,
    )
    return preprocess(raw, PreprocessConfig.model_validate(preprocess_config or {}))


def _polars(frame: Any) -> Any:
    """A Polars DataFrame from a pandas or Polars one (None stays None)."""
    if frame is None or isinstance(frame, pl.DataFrame):
        return frame
    return pl.from_pandas(frame)
