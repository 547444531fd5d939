"""Item categories from a dataset's item table: what an interest is read against.

The category column is the simulator's ``topic``, Taobao's ``category``, MovieLens'
``genres`` or S3-Rec's ``attributes`` (found in that order unless named). Each item spreads
a weight of 1 evenly over its values; the ``max_categories`` values with the most events
are kept and every other value (and an item without one) counts as ``other``, so that a
catalogue of thousands of categories still reads as a handful of series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from evorec.data.dataset import ITEM_IDX, Dataset
from evorec.errors import DataError

CATEGORY_COLUMNS = ("topic", "category", "genres", "categories", "attributes")
OTHER = "other"
MAX_CATEGORIES = 12
# matplotlib's tab10, then the light halves of tab20: the figure and the dashboard share them
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


@dataclass(frozen=True)
class ItemCategories:
    """``membership[i, c]``: the share of item ``i`` in category ``names[c]``; each row sums
    to 1. ``column`` is the item-table column the categories come from."""

    column: str
    names: list[str]
    membership: np.ndarray

    @property
    def n_categories(self) -> int:
        return len(self.names)

    def mix(self, items: np.ndarray) -> np.ndarray:
        """The category mix of a set of items: the mean of their membership rows (``[C]``,
        summing to 1; zeros for no items)."""
        if len(items) == 0:
            return np.zeros(self.n_categories)
        return self.membership[np.asarray(items, dtype=np.int64)].mean(axis=0)

    def labels(self, item: int) -> list[str]:
        """The categories an item belongs to, largest share first."""
        row = self.membership[item]
        order = np.argsort(-row, kind="stable")
        return [self.names[c] for c in order if row[c] > 0]

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, column: str | None = None, max_categories: int = MAX_CATEGORIES
    ) -> ItemCategories:
        """The categories of ``dataset``'s items from ``column`` (default: the first of
        :data:`CATEGORY_COLUMNS` its item table has); :class:`DataError` without one."""
        items = dataset.items
        present = [] if items is None else items.columns
        if column is None:
            column = next((c for c in CATEGORY_COLUMNS if c in present), None)
            if column is None:
                raise DataError(
                    f"dataset '{dataset.name}' has no item category column (looked for "
                    f"{', '.join(CATEGORY_COLUMNS)})",
                    field="category",
                )
        elif column not in present or column in ("item_id", ITEM_IDX):
            choices = ", ".join(c for c in present if c not in ("item_id", ITEM_IDX)) or "none"
            raise DataError(
                f"no item column {column!r} in dataset '{dataset.name}' (columns: {choices})",
                field="category",
            )
        if max_categories < 1:
            raise DataError("max_categories must be at least 1", field="max_categories")
        assert items is not None
        return _categories(items, column, dataset.n_items, dataset.item_popularity, max_categories)


def category_colors(n: int) -> list[str]:
    """The colour of each of ``n`` categories (``#rrggbb``), repeating past the palette."""
    return [PALETTE[c % len(PALETTE)] for c in range(n)]


def _categories(
    items: pl.DataFrame, column: str, n_items: int, popularity: np.ndarray, limit: int
) -> ItemCategories:
    dtype = items.schema[column]
    values = items.select(ITEM_IDX, pl.col(column).alias("value"))
    if isinstance(dtype, pl.List):
        values = values.explode("value")
        inner = dtype.inner
    else:
        inner = dtype
    values = values.drop_nulls().unique(maintain_order=True)
    labelled = inner.is_integer() if inner is not None else False
    values = values.with_columns(
        label=(pl.lit(f"{column} ") + pl.col("value").cast(pl.String))
        if labelled
        else pl.col("value").cast(pl.String)
    )
    item = values[ITEM_IDX].to_numpy().astype(np.int64)
    per_item = np.bincount(item, minlength=n_items)
    weight = 1.0 / per_item[item]
    # rank the values by the events of their items (ties: by label, so the order is stable)
    events = weight * popularity[item]
    ranked = (
        pl.DataFrame({"label": values["label"], "events": events})
        .group_by("label")
        .agg(pl.col("events").sum())
        .sort(["events", "label"], descending=[True, False])
    )
    kept = ranked["label"].head(limit).to_list()
    kept.sort(key=_natural)
    code = {label: c for c, label in enumerate(kept)}
    column_of = np.fromiter(
        (code.get(label, len(kept)) for label in values["label"]), dtype=np.int64, count=len(item)
    )
    membership = np.zeros((n_items, len(kept) + 1))
    np.add.at(membership, (item, column_of), weight)
    membership[per_item == 0, len(kept)] = 1.0  # items without a value
    names = [*kept, OTHER]
    if not membership[:, -1].any():
        membership, names = membership[:, :-1], kept
    return ItemCategories(column, names, membership)


def _natural(label: str) -> tuple[str, int, str]:
    """Sort key: ``topic 2`` before ``topic 10``."""
    head, _, tail = label.rpartition(" ")
    return (head, int(tail), "") if tail.isdigit() else (label, -1, label)
