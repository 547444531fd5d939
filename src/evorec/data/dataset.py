"""A preprocessed dataset: events with contiguous internal ids plus the id mappings."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from evorec.data.histories import Histories
from evorec.data.schema import BEHAVIOR, ITEM, TIME, USER, VALUE
from evorec.errors import DataError, UnknownIdError
from evorec.io import write_atomic_dir

USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
DATASET_FORMAT = 1


def _cast_id(value: Any, dtype: pl.DataType) -> Any:
    """``value`` as an id of type ``dtype``, or None when it is not one."""
    try:
        return pl.Series("id", [value]).cast(dtype, strict=True)[0]
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError, TypeError):
        return None


@dataclass
class Dataset:
    """Events in internal ids, sorted by user then time (ties keep file order).

    ``events`` has ``user_idx`` and ``item_idx`` (Int64, contiguous from 0), ``timestamp``,
    ``behavior`` (Int64 code into ``behaviors``, null when absent) and ``value``.
    ``user_ids[u]`` / ``item_ids[i]`` give the original id of internal index ``u`` / ``i``.
    """

    events: pl.DataFrame
    user_ids: pl.Series
    item_ids: pl.Series
    items: pl.DataFrame | None = None
    users: pl.DataFrame | None = None
    behaviors: list[str] = field(default_factory=list)
    has_time: bool = True
    name: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return self.events.height

    @cached_property
    def histories(self) -> Histories:
        """Every user's chronological history, row ``u`` = internal user ``u``."""
        counts = np.bincount(self.events[USER_IDX].to_numpy(), minlength=self.n_users)
        offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        behavior = self.events["behavior"]
        return Histories(
            offsets,
            self.events[ITEM_IDX].to_numpy().astype(np.int64),
            self.events["timestamp"].to_numpy().astype(np.int64),
            behavior.fill_null(-1).to_numpy().astype(np.int64) if self.behaviors else None,
            np.arange(self.n_users, dtype=np.int64),
        )

    @cached_property
    def item_popularity(self) -> np.ndarray:
        return np.bincount(self.events[ITEM_IDX].to_numpy(), minlength=self.n_items)

    @cached_property
    def has_repeats(self) -> bool:
        """Whether some user takes the same item more than once (repeat consumption)."""
        pairs = self.events.select(USER_IDX, ITEM_IDX)
        return pairs.height > 0 and pairs.is_duplicated().any()

    def replace(self, **changes: Any) -> Dataset:
        """A copy with the fields named in ``changes`` (keywords of :class:`Dataset`) replaced;
        ``meta`` is copied, and the cached histories are rebuilt for the copy."""
        return dataclasses.replace(self, **{"meta": dict(self.meta), **changes})

    def with_events(self, events: pl.DataFrame) -> Dataset:
        """The same id space and side tables over another set of events."""
        return self.replace(events=events)

    # -- id mapping ---------------------------------------------------------------------

    def _encode(self, ids: Iterable[Any], mapping: pl.Series, kind: str) -> np.ndarray:
        ids = list(ids)
        try:
            query = pl.Series("id", ids).cast(mapping.dtype, strict=True)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError, TypeError):
            # some ids do not fit the id type (or the ids mix types, which pl.Series refuses
            # with a TypeError): look them up one by one, the misfits being unknown
            query = pl.Series("id", [_cast_id(v, mapping.dtype) for v in ids], dtype=mapping.dtype)
        index = pl.DataFrame({"id": mapping, "idx": np.arange(len(mapping), dtype=np.int64)})
        found = pl.DataFrame({"id": query}).join(index, on="id", how="left", maintain_order="left")
        missing = found["idx"].is_null().to_numpy()
        if missing.any():
            bad = [ids[i] for i in np.flatnonzero(missing)[:5]]
            raise UnknownIdError(f"unknown {kind} id(s): {', '.join(map(str, bad))}")
        return found["idx"].to_numpy().astype(np.int64)

    def encode_users(self, ids: Iterable[Any]) -> np.ndarray:
        return self._encode(ids, self.user_ids, "user")

    def encode_items(self, ids: Iterable[Any]) -> np.ndarray:
        return self._encode(ids, self.item_ids, "item")

    def stats(self) -> dict[str, Any]:
        lengths = self.histories.lengths
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "events": self.n_events,
            "density": self.n_events / max(self.n_users * self.n_items, 1),
            "mean_history": float(lengths.mean()) if len(lengths) else 0.0,
            "median_history": float(np.median(lengths)) if len(lengths) else 0.0,
            "has_time": self.has_time,
            "behaviors": self.behaviors,
        }

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the dataset to directory ``path`` atomically (temp dir + rename)."""

        def write(tmp: Path) -> None:
            self.events.write_parquet(tmp / "events.parquet")
            pl.DataFrame({"user_id": self.user_ids}).write_parquet(tmp / "user_ids.parquet")
            pl.DataFrame({"item_id": self.item_ids}).write_parquet(tmp / "item_ids.parquet")
            if self.items is not None:
                self.items.write_parquet(tmp / "items.parquet")
            if self.users is not None:
                self.users.write_parquet(tmp / "users.parquet")
            meta = {
                "format": DATASET_FORMAT,
                "name": self.name,
                "has_time": self.has_time,
                "behaviors": self.behaviors,
                "meta": self.meta,
            }
            (tmp / "dataset.json").write_text(json.dumps(meta, indent=2, default=str))

        write_atomic_dir(path, write)

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """A dataset written by :meth:`save`; :class:`DataError` naming the file at fault
        when one is missing, unreadable or inconsistent with the others."""
        path = Path(path)
        required = ["dataset.json", "events.parquet", "user_ids.parquet", "item_ids.parquet"]
        missing = [name for name in required if not (path / name).exists()]
        if missing:
            raise DataError(f"not a saved dataset, missing {', '.join(missing)}", path=path)
        meta = _read_meta(path / "dataset.json")

        def optional(name: str) -> pl.DataFrame | None:
            file = path / name
            return _read_table(file, ()) if file.exists() else None

        user_ids = _read_table(path / "user_ids.parquet", (USER,))[USER]
        item_ids = _read_table(path / "item_ids.parquet", (ITEM,))[ITEM]
        for ids, name in ((user_ids, "user_ids.parquet"), (item_ids, "item_ids.parquet")):
            if ids.null_count() or ids.is_duplicated().any():
                raise DataError("ids must be unique and not null", path=path / name)
        events = _read_table(path / "events.parquet", (USER_IDX, ITEM_IDX, TIME, BEHAVIOR, VALUE))
        _check_events(path / "events.parquet", events, len(user_ids), len(item_ids), meta)
        return cls(
            events=events,
            user_ids=user_ids,
            item_ids=item_ids,
            items=optional("items.parquet"),
            users=optional("users.parquet"),
            behaviors=meta["behaviors"],
            has_time=meta["has_time"],
            name=meta["name"],
            meta=meta["meta"],
        )


# the fields of dataset.json with their type and its JSON name
META_TYPES: dict[str, tuple[type, str]] = {
    "behaviors": (list, "array"),
    "has_time": (bool, "boolean"),
    "name": (str, "string"),
    "meta": (dict, "object"),
}


def _read_meta(file: Path) -> dict[str, Any]:
    """``dataset.json``, checked for its format and the types of its fields."""
    try:
        meta = json.loads(file.read_bytes())
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", path=file) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path=file) from None
    if not isinstance(meta, dict):
        raise DataError("holds no JSON object", path=file)
    if meta.get("format") != DATASET_FORMAT:
        raise DataError(
            f"dataset format {meta.get('format')} is not supported "
            f"(this evorec reads format {DATASET_FORMAT})",
            path=file,
        )
    for key, (kind, name) in META_TYPES.items():
        if not isinstance(meta.get(key), kind):
            raise DataError(f"must be a JSON {name}", path=file, field=key)
    if not all(isinstance(b, str) for b in meta["behaviors"]):
        raise DataError("must be a list of names", path=file, field="behaviors")
    return meta


def _read_table(file: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    """A Parquet file that must hold ``columns``."""
    try:
        frame = pl.read_parquet(file)
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", path=file) from None
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
        # a panic is no Exception subclass: caught here, it cannot end a caller's retry loop
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"not a readable Parquet file, truncated or corrupt ({detail})", path=file
        ) from None
    for column in columns:
        if column not in frame.columns:
            raise DataError(
                f"no column {column!r} (columns: {', '.join(frame.columns)})", path=file
            )
    return frame


def _check_events(
    file: Path, events: pl.DataFrame, n_users: int, n_items: int, meta: dict[str, Any]
) -> None:
    """The events index the saved id tables, are grouped by user in user order and have
    a time each: what :attr:`Dataset.histories` relies on."""
    for column, bound in ((USER_IDX, n_users), (ITEM_IDX, n_items), (TIME, None)):
        values = events[column]
        if not values.dtype.is_integer():
            raise DataError(f"is {values.dtype}, not integers", path=file, field=column)
        if values.null_count():
            raise DataError("has missing values", path=file, field=column)
        if bound is not None and len(values) and (values.min() < 0 or values.max() >= bound):
            raise DataError(
                f"values must lie in [0, {bound}) (the ids saved beside)", path=file, field=column
            )
    users = events[USER_IDX]
    if len(users) > 1 and (users.diff().drop_nulls() < 0).any():
        raise DataError("events are not grouped by user in user order", path=file, field=USER_IDX)
    codes = events[BEHAVIOR].drop_nulls()
    if not (codes.dtype.is_integer() or codes.dtype == pl.Null):
        raise DataError(f"is {codes.dtype}, not behaviour codes", path=file, field=BEHAVIOR)
    if len(codes) and (codes.min() < 0 or codes.max() >= len(meta["behaviors"])):
        raise DataError(
            f"codes must lie in [0, {len(meta['behaviors'])}) (the behaviours of dataset.json)",
            path=file,
            field=BEHAVIOR,
        )
