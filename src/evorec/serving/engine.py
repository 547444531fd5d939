"""A loaded model ready to serve: stored events in, top-K original item ids out.

Scoring is ``s = i · v`` through the retrieval index of the item vectors
(``evorec.retrieval``: exact for small catalogues, ANN above), ranked by the model's
``rank`` (``evorec.retrieval.ranking.rank``); users with no event the model knows get the
most popular items through the same filters. An int8 model's item vectors stay int8 here:
the index and the unit vectors of ``similar`` share the model's codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from evorec.data.histories import Histories
from evorec.data.schema import BEHAVIOR, ITEM, TIME
from evorec.errors import DataError, UnknownIdError
from evorec.modeldir import model_version
from evorec.models.base import Recommender
from evorec.retrieval import ItemIndex, Ranking, load_or_build_index, rank
from evorec.retrieval.ranking import check_vectors, dense_rows, unit_length


@dataclass(frozen=True)
class Ranked:
    """Top-K item indices with their scores; ``source`` is ``model`` or ``popularity``."""

    items: np.ndarray
    scores: np.ndarray
    source: str


class ServedModel:
    """One model directory, loaded fully, never changed after: requests that hold it keep
    working while a reload swaps in another."""

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        self.model = Recommender.load(self.model_dir)
        self.version = model_version(self.model_dir)
        dataset = self.model.dataset
        assert dataset is not None  # Recommender.load sets it
        self.dataset = dataset
        vectors = check_vectors(self.model.item_vectors())
        self.index: ItemIndex = load_or_build_index(self.model_dir, vectors)
        self.unit_vectors = unit_length(vectors)
        self.item_ids: list[Any] = dataset.item_ids.to_list()
        self.item_lookup = {str(item): n for n, item in enumerate(self.item_ids)}
        self.behavior_codes = {name: code for code, name in enumerate(dataset.behaviors)}
        # models that read user profiles look users up by id; the others need no table
        profiled = getattr(self.model, "user_profiles", None) is not None
        self.user_lookup = (
            {str(user): n for n, user in enumerate(dataset.user_ids.to_list())} if profiled else {}
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # -- ids ------------------------------------------------------------------------------

    def item_index(self, item_id: str) -> int:
        """The internal index of a known item; :class:`UnknownIdError` otherwise."""
        index = self.item_lookup.get(item_id)
        if index is None:
            raise UnknownIdError(f"unknown item id {item_id!r}")
        return index

    def known_items(self, item_ids: Iterable[str]) -> np.ndarray:
        """Internal indices of the ids the model knows; the others are left out."""
        found = (self.item_lookup.get(item) for item in item_ids)
        return np.fromiter((i for i in found if i is not None), dtype=np.int64)

    def typed_item(self, item_id: str) -> Any:
        """A stored (text) item id as the dataset's id, or as given when the model lacks it."""
        index = self.item_lookup.get(item_id)
        return item_id if index is None else self.item_ids[index]

    def history(
        self, events: pl.DataFrame, with_times: bool = True, user_id: str | None = None
    ) -> Histories:
        """One history row from events (``item_id`` text, chronological); events of items
        the model does not know are dropped. ``user_id`` names the user for models that
        read user profiles (unknown users have none)."""
        index = np.array([self.item_lookup.get(i, -1) for i in events[ITEM]], dtype=np.int64)
        known = index >= 0
        behaviors = None
        if self.behavior_codes and BEHAVIOR in events.columns:
            codes = [self.behavior_codes.get(b, -1) for b in events[BEHAVIOR]]
            behaviors = np.asarray(codes, dtype=np.int64)[known]
        times = events[TIME].to_numpy().astype(np.int64)[known] if with_times else None
        offsets = np.array([0, int(known.sum())], dtype=np.int64)
        users = None
        if self.user_lookup and user_id is not None:
            users = np.array([self.user_lookup.get(user_id, -1)], dtype=np.int64)
        return Histories(offsets, index[known], times, behaviors, users)

    # -- filters --------------------------------------------------------------------------

    def allowed(
        self, allow: Sequence[str] | None, attributes: Mapping[str, str]
    ) -> np.ndarray | None:
        """The candidate mask of an allow-list and ``column = value`` attribute filters
        (a list column matches when it contains the value); None: every item."""
        mask = None
        if allow is not None:
            mask = np.zeros(self.n_items, dtype=bool)
            mask[self.known_items(allow)] = True
        if attributes:
            items = self.dataset.items
            if items is None:
                raise DataError("this model's dataset has no item table to filter on", field="attr")
            condition = pl.lit(True)
            for column, value in attributes.items():
                condition &= _matches(items, column, value)
            kept = items.filter(condition)[ITEM].cast(pl.Utf8)
            by_attribute = np.zeros(self.n_items, dtype=bool)
            by_attribute[self.known_items(kept)] = True
            mask = by_attribute if mask is None else mask & by_attribute
        return mask

    # -- ranking --------------------------------------------------------------------------

    def recommend(
        self, history: Histories, k: int, exclude: np.ndarray, allowed: np.ndarray | None
    ) -> Ranked:
        """Top-``k`` for one history, never an item of ``exclude``; popularity when the
        history is empty."""
        ranking = self.model.rank(history, k, exclude=[exclude], allowed=allowed, index=self.index)
        return _ranked(ranking, "popularity" if ranking.fallback[0] else "model")

    def similar(self, item: int, k: int, allowed: np.ndarray | None) -> Ranked:
        """The ``k`` items of the most similar vectors (cosine), the item itself left out."""
        query = dense_rows(self.unit_vectors, slice(item, item + 1))
        exclude = [np.array([item], dtype=np.int64)]
        ranking = rank(k, queries=query, items=self.unit_vectors, exclude=exclude, allowed=allowed)
        return _ranked(ranking, "model")


def _ranked(ranking: Ranking, source: str) -> Ranked:
    keep = ranking.items[0] >= 0
    return Ranked(ranking.items[0][keep], ranking.scores[0][keep].astype(np.float64), source)


def _matches(items: pl.DataFrame, column: str, value: str) -> pl.Expr:
    if column == ITEM or column not in items.columns:
        names = ", ".join(c for c in items.columns if c != ITEM)
        raise DataError(f"no item attribute {column!r} (attributes: {names})", field="attr")
    dtype = items.schema[column]
    inner = dtype.inner if isinstance(dtype, pl.List) else dtype
    try:
        typed = pl.Series([value]).cast(inner, strict=True)[0]
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
        raise DataError(f"{value!r} is not a {inner} value", field=f"attr.{column}") from None
    if isinstance(dtype, pl.List):
        return pl.col(column).list.contains(typed)
    return pl.col(column) == typed
