"""Sparse graph operators shared by the graph models (LightGCN, social propagation)."""

from __future__ import annotations

import numpy as np
import torch


def sparse(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]):
    """A coalesced float32 COO matrix."""
    index = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(
        index, torch.from_numpy(values.astype(np.float32)), shape, check_invariants=False
    ).coalesce()


def unique_pairs(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(row, col)`` pairs, sorted."""
    if len(rows) == 0:
        return rows.astype(np.int64), cols.astype(np.int64)
    pairs = np.unique(np.stack([rows, cols], axis=1).astype(np.int64), axis=0)
    return pairs[:, 0], pairs[:, 1]


def row_normalized(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """``D⁻¹ A`` of the binary matrix with ones at the distinct ``(rows, cols)``: row ``r``
    of a product with it is the mean over ``r``'s neighbours (zero without any)."""
    rows, cols = unique_pairs(rows, cols)
    degree = np.bincount(rows, minlength=shape[0]).astype(np.float64)
    return sparse(rows, cols, 1.0 / degree[rows], shape)


def bipartite_adjacency(
    users: np.ndarray, items: np.ndarray, n_users: int, n_items: int
) -> torch.Tensor:
    """``D^-1/2 A D^-1/2`` of the user-item graph (He et al., SIGIR 2020, eq. 7): nodes are
    users ``0..n_users-1`` then items, one undirected unit edge per distinct interaction."""
    users, items = unique_pairs(users, items)
    user_degree = np.bincount(users, minlength=n_users).astype(np.float64)
    item_degree = np.bincount(items, minlength=n_items).astype(np.float64)
    weight = 1.0 / np.sqrt(user_degree[users] * item_degree[items])
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    size = n_users + n_items
    return sparse(rows, cols, np.concatenate([weight, weight]), (size, size))
