"""Item content by internal item index, read from a dataset's item table.

Which columns feed which encoder, by type: list columns (S3-Rec ``attributes``, MovieLens
``genres``) and other string or integer columns (Taobao ``category``) are categorical
attributes, multi-valued where a list; float columns are numeric attributes (z-scored);
``text`` (UniSRec) or else ``title`` (MovieLens) is the item text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from evorec.data.dataset import ITEM_IDX, Dataset
from evorec.errors import ConfigError
from evorec.features.text import TextEmbedder

FEATURE_KINDS = ("id", "attributes", "numeric", "text")
TEXT_COLUMNS = ("text", "title")
ID_COLUMNS = ("item_id", ITEM_IDX)


@dataclass
class ItemFeatures:
    """Content of each of ``n_items`` items, row = internal item index.

    ``trained``: the item has training events (items without keep no id embedding);
    attributes in CSR form: item ``i`` has tokens ``attribute_values[attribute_offsets[i]:
    attribute_offsets[i + 1]]`` out of ``n_attributes``; ``numeric``: z-scored float
    columns, missing = 0; ``text``: L2-normalised text embeddings, zero rows without text.
    """

    trained: np.ndarray
    attribute_offsets: np.ndarray | None = None
    attribute_values: np.ndarray | None = None
    n_attributes: int = 0
    numeric: np.ndarray | None = None
    text: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.trained)

    def state(self) -> dict[str, Any]:
        """Arrays and sizes to save with a model (see :meth:`from_state`)."""
        arrays = {
            "trained": self.trained,
            "attribute_offsets": self.attribute_offsets,
            "attribute_values": self.attribute_values,
            "numeric": self.numeric,
            "text": self.text,
        }
        return {k: v for k, v in arrays.items() if v is not None} | {
            "n_attributes": self.n_attributes
        }

    def extended(self, trained: np.ndarray) -> ItemFeatures:
        """The features of a catalogue grown to ``len(trained)`` items: the items after the
        current ones have no content (they are their id rows alone); ``trained`` replaces
        the mask of items with training events."""
        added = len(trained) - self.n_items
        if added < 0:
            raise ValueError(f"cannot shrink {self.n_items} items to {len(trained)}")

        def rows(matrix: np.ndarray | None) -> np.ndarray | None:
            if matrix is None:
                return None
            return np.vstack([matrix, np.zeros((added, matrix.shape[1]), matrix.dtype)])

        offsets = self.attribute_offsets
        if offsets is not None:
            offsets = np.concatenate([offsets, np.full(added, offsets[-1], offsets.dtype)])
        return ItemFeatures(
            trained=np.asarray(trained, dtype=bool),
            attribute_offsets=offsets,
            attribute_values=self.attribute_values,
            n_attributes=self.n_attributes,
            numeric=rows(self.numeric),
            text=rows(self.text),
        )

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ItemFeatures:
        """The features :meth:`state` returned; ``ValueError`` naming the array that is
        missing or does not fit the others (a saved state comes from a file)."""

        def array(key: str, kind: str, ndim: int) -> np.ndarray | None:
            value = state.get(key)
            if value is None:
                return None
            return checked_array(value, f"item features '{key}'", kind, ndim)

        trained = array("trained", "b", 1)
        if trained is None:
            raise ValueError("item features: no 'trained' mask")
        n_attributes = state.get("n_attributes")
        if isinstance(n_attributes, bool) or not isinstance(n_attributes, int) or n_attributes < 0:
            raise ValueError(f"item features 'n_attributes': {n_attributes!r} is no count")
        features = cls(
            trained=trained,
            attribute_offsets=array("attribute_offsets", "iu", 1),
            attribute_values=array("attribute_values", "iu", 1),
            n_attributes=n_attributes,
            numeric=array("numeric", "f", 2),
            text=array("text", "f", 2),
        )
        features._check_rows()
        return features

    def _check_rows(self) -> None:
        """Every array has one row per item, and attribute tokens index the vocabulary."""
        n = self.n_items
        for key, matrix in (("numeric", self.numeric), ("text", self.text)):
            if matrix is not None and len(matrix) != n:
                raise ValueError(f"item features '{key}': {len(matrix)} rows for {n} items")
        offsets, values = self.attribute_offsets, self.attribute_values
        if (offsets is None) != (values is None):
            raise ValueError("item features: attribute offsets and values come together")
        if offsets is None or values is None:
            return
        if (
            len(offsets) != n + 1
            or offsets[0] != 0
            or offsets[-1] != len(values)
            or (np.diff(offsets) < 0).any()
        ):
            raise ValueError(f"item features 'attribute_offsets': not the CSR offsets of {n} items")
        if len(values) and (values.min() < 0 or values.max() >= self.n_attributes):
            raise ValueError(
                f"item features 'attribute_values': tokens outside [0, {self.n_attributes})"
            )


def checked_array(value: Any, what: str, kinds: str, ndim: int) -> np.ndarray:
    """``value`` (a tensor or array of a saved state) as an array of one of the dtype
    ``kinds`` (NumPy kind codes) with ``ndim`` dimensions; ``ValueError`` otherwise."""
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{what}: a {type(value).__name__}, not an array")
    matrix = value.numpy() if isinstance(value, torch.Tensor) else value
    if matrix.dtype.kind not in kinds or matrix.ndim != ndim:
        raise ValueError(f"{what}: {matrix.dtype} of shape {matrix.shape}, expected {ndim}-D")
    return matrix


def split_columns(schema: pl.Schema, skip: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """The columns of a side table not in ``skip`` by kind: ``categorical`` (list, string
    and integer columns) and ``numeric`` (float columns); others are left out."""
    out: dict[str, list[str]] = {"categorical": [], "numeric": []}
    for column, dtype in schema.items():
        if column in skip:
            continue
        if dtype.is_float():
            out["numeric"].append(column)
        elif isinstance(dtype, pl.List) or dtype == pl.String or dtype.is_integer():
            out["categorical"].append(column)
    return out


def text_column(columns: Iterable[str]) -> str | None:
    """The item-text column among ``columns``: ``text``, else ``title``; None without one."""
    present = set(columns)
    return next((c for c in TEXT_COLUMNS if c in present), None)


def item_columns(dataset: Dataset) -> dict[str, list[str]]:
    """The item-table columns behind each content kind (see the module docstring)."""
    if dataset.items is None:
        return {"attributes": [], "numeric": [], "text": []}
    schema = dataset.items.schema
    column = text_column(schema.names())
    text = [column] if column is not None else []
    kinds = split_columns(schema, [*ID_COLUMNS, *text])
    return {"attributes": kinds["categorical"], "numeric": kinds["numeric"], "text": text}


def build_item_features(
    dataset: Dataset,
    kinds: list[str],
    *,
    text_model: str,
    progress: bool = False,
) -> ItemFeatures:
    """The content ``kinds`` of every item of ``dataset``; ``trained`` from its events."""
    columns = item_columns(dataset)
    for kind in kinds:
        if kind != "id" and not columns[kind]:
            raise ConfigError(
                f"item_features: '{kind}' needs an item table with "
                f"{'a text or title column' if kind == 'text' else kind + ' columns'}, "
                f"dataset '{dataset.name}' has none"
            )
    n = dataset.n_items
    features = ItemFeatures(trained=dataset.item_popularity > 0)
    items = dataset.items
    if "attributes" in kinds:
        offsets, values, vocab = attribute_tokens(items, columns["attributes"], n)
        features.attribute_offsets, features.attribute_values = offsets, values
        features.n_attributes = vocab
    if "numeric" in kinds:
        features.numeric = numeric_matrix(items, columns["numeric"], n)
    if "text" in kinds:
        features.text = text_matrix(items, columns["text"][0], n, text_model, progress)
    return features


def attribute_tokens(
    items: pl.DataFrame, columns: list[str], n_items: int, key: str = ITEM_IDX
) -> tuple[np.ndarray, np.ndarray, int]:
    """CSR offsets and token ids of each row's distinct ``column=value`` tokens (rows =
    internal indices in column ``key``), and the vocabulary size; tokens are numbered in
    sorted order, so the same table gives the same ids."""
    frames = []
    for column in columns:
        part = items.select(key, pl.col(column))
        if isinstance(items.schema[column], pl.List):
            part = part.explode(column)
        frames.append(
            part.drop_nulls(column).select(
                key, token=pl.lit(f"{column}=") + pl.col(column).cast(pl.String)
            )
        )
    tokens = pl.concat(frames).unique(maintain_order=True)
    vocab = tokens["token"].unique().sort()
    codes = pl.DataFrame({"token": vocab, "code": np.arange(len(vocab), dtype=np.int64)})
    tokens = tokens.join(codes, on="token").sort(key, "code")
    offsets = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(tokens[key].to_numpy(), minlength=n_items), out=offsets[1:])
    return offsets, tokens["code"].to_numpy().astype(np.int64), len(vocab)


def numeric_matrix(
    items: pl.DataFrame, columns: list[str], n_items: int, key: str = ITEM_IDX
) -> np.ndarray:
    """``[n_items, len(columns)]`` (rows = internal indices in column ``key``): each column
    z-scored over the rows that have it, missing values (and rows absent from the table) 0,
    the column mean."""
    out = np.zeros((n_items, len(columns)), dtype=np.float32)
    rows = items[key].to_numpy()
    for j, column in enumerate(columns):
        values = items[column].cast(pl.Float64).fill_nan(None)
        mean, std = values.mean(), values.std()
        scaled = (values - mean) / (std if std else 1.0)
        out[rows, j] = scaled.fill_null(0.0).to_numpy()
    return out


def text_matrix(
    items: pl.DataFrame, column: str, n_items: int, model: str, progress: bool
) -> np.ndarray:
    """``[n_items, model dim]`` text embeddings; items without text get zero rows."""
    present = items.select(ITEM_IDX, pl.col(column).str.strip_chars()).filter(
        pl.col(column).str.len_chars() > 0
    )
    vectors = TextEmbedder(model).embed(present[column].to_list(), progress=progress)
    out = np.zeros((n_items, vectors.shape[1]), dtype=np.float32)
    out[present[ITEM_IDX].to_numpy()] = vectors
    return out
