"""User-user edges (trust, friendship) carried on a dataset's user table.

Readers of social datasets (Ciao, HetRec Last.fm) give each user a ``friends`` column of
original user ids; preprocessing keeps it in ``Dataset.users``. These helpers turn it into
edges between internal user indices.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from evorec.data.dataset import USER_IDX, Dataset

FRIENDS = "friends"


def has_social(dataset: Dataset) -> bool:
    return dataset.users is not None and FRIENDS in dataset.users.columns


def social_edges(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges ``user -> friend`` (internal indices, "user trusts/follows friend"),
    sorted by user; friends that preprocessing removed are dropped. Empty without a social
    table."""
    if not has_social(dataset):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    assert dataset.users is not None
    index = pl.DataFrame(
        {"friend_id": dataset.user_ids, "friend_idx": np.arange(dataset.n_users, dtype=np.int64)}
    )
    edges = (
        dataset.users.select(USER_IDX, pl.col(FRIENDS).alias("friend_id"))
        .explode("friend_id")
        .drop_nulls()
        .with_columns(pl.col("friend_id").cast(dataset.user_ids.dtype, strict=False))
        .join(index, on="friend_id", how="inner")
        .filter(pl.col(USER_IDX) != pl.col("friend_idx"))
        .unique([USER_IDX, "friend_idx"])
        .sort(USER_IDX, "friend_idx")
    )
    return (
        edges[USER_IDX].to_numpy().astype(np.int64),
        edges["friend_idx"].to_numpy().astype(np.int64),
    )


def without_social(dataset: Dataset) -> Dataset:
    """``dataset`` with its social edges removed (the ablation "no social ties")."""
    if not has_social(dataset):
        return dataset
    assert dataset.users is not None
    stripped = dataset.with_events(dataset.events)
    stripped.users = dataset.users.drop(FRIENDS)
    return stripped
