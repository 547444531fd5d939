"""The one ranking path: the top-K items of each query by ``s = i · v``, under its filters.

:func:`rank` serves ``Recommender.recommend`` and the service alike, and holds each rule
once: an item excluded for a query (its history, a deny-list) or outside the allow-list is
never returned; a query with nothing usable (an empty history) is ranked by the fallback
scores (popularity) through the same filters; a query gets ``k`` items whenever ``k``
candidates exist, padded with ``-inf`` / ``-1`` only when fewer do. The model's scores come
from an :class:`~evorec.retrieval.index.ItemIndex` (exact or ANN), from the item vectors
scored exactly (:func:`exact_search`), or from a full score matrix (a model's ``score``).
Evaluation, which ranks every item, removes seen items with :func:`exclude_seen`.

This module loads no faiss (every model imports it); the indexes build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from evorec.data.histories import Histories
from evorec.errors import EvorecError, UnknownIdError

if TYPE_CHECKING:
    from evorec.retrieval.index import ItemIndex

SCORE_BUDGET = 2**25  # exact scores held at once (floats): bounds memory
DEQUANTISED_ROWS = 4096  # int8 item rows dequantised at once for scoring

Result = tuple[np.ndarray, np.ndarray]  # (scores [n, k] float32, items [n, k] int64)
Exclusions = Histories | Sequence[np.ndarray]  # per query, item indices never returned


@dataclass(frozen=True)
class Int8Vectors:
    """Item vectors held as int8 codes with one float32 scale per row, ``v = codes · scale``
    (how an int8-compressed model holds its item table). The arrays may be views of the
    model's own buffers: nothing here copies them whole or dequantises them whole."""

    codes: np.ndarray  # [n_items, dim] int8
    scale: np.ndarray  # [n_items] float32

    def __post_init__(self) -> None:
        codes, scale = self.codes, self.scale
        if codes.dtype != np.int8 or codes.ndim != 2:
            raise EvorecError(
                f"int8 vectors: codes must be an int8 matrix, got {codes.dtype} {codes.shape}"
            )
        if scale.dtype != np.float32 or scale.shape != (len(codes),):
            raise EvorecError(
                f"int8 vectors: scale must be float32 of shape ({len(codes)},), got "
                f"{scale.dtype} {scale.shape}"
            )

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scale.nbytes

    def take(self, rows: np.ndarray) -> Int8Vectors:
        """The given rows (a copy of their codes)."""
        return Int8Vectors(self.codes[rows], self.scale[rows])

    def dense(self, rows: np.ndarray | slice) -> np.ndarray:
        """The given rows dequantised: ``[len(rows), dim]`` float32."""
        return self.codes[rows].astype(np.float32) * self.scale[rows, None]

    def unit_length(self) -> Int8Vectors:
        """The rows scaled to unit length: the same codes, each row's scale ``1 / |codes|``
        (exact: a row's direction is its codes')."""
        norms = np.empty(len(self), dtype=np.float32)
        for start in range(0, len(self), DEQUANTISED_ROWS):
            block = self.codes[start : start + DEQUANTISED_ROWS].astype(np.float32)
            norms[start : start + len(block)] = np.linalg.norm(block, axis=1)
        return Int8Vectors(self.codes, (1.0 / np.maximum(norms, 1e-12)).astype(np.float32))


ItemVectors = np.ndarray | Int8Vectors  # float32 [n_items, dim], or int8 rows with scales


def inner_products(queries: torch.Tensor, vectors: ItemVectors) -> torch.Tensor:
    """``queries @ v.T`` (``[n, n_items]`` float32, on the queries' device); int8 vectors
    are dequantised :data:`DEQUANTISED_ROWS` rows at a time."""
    if not isinstance(vectors, Int8Vectors):
        items = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        return queries @ items.to(queries.device).T
    out = torch.empty((len(queries), len(vectors)), dtype=torch.float32, device=queries.device)
    for start in range(0, len(vectors), DEQUANTISED_ROWS):
        stop = min(start + DEQUANTISED_ROWS, len(vectors))
        block = torch.from_numpy(vectors.dense(slice(start, stop))).to(queries.device)
        out[:, start:stop] = queries @ block.T
    return out


def dense_rows(vectors: ItemVectors, rows: np.ndarray | slice) -> np.ndarray:
    """Rows of ``vectors`` as float32 (int8 rows dequantised)."""
    if isinstance(vectors, Int8Vectors):
        return vectors.dense(rows)
    return np.asarray(vectors[rows], dtype=np.float32)


def dense(vectors: ItemVectors) -> np.ndarray:
    """Every item vector as a float32 matrix: int8 vectors dequantised whole (for offline
    uses that need the matrix; scoring goes through :func:`inner_products`)."""
    return dense_rows(vectors, slice(None))


def unit_length(vectors: ItemVectors) -> ItemVectors:
    """``vectors`` with each row scaled to unit length (zero rows stay zero)."""
    if isinstance(vectors, Int8Vectors):
        return vectors.unit_length()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def finite_rows(vectors: ItemVectors) -> np.ndarray:
    """Which rows of ``vectors`` are finite (boolean, one per item)."""
    if isinstance(vectors, Int8Vectors):
        return np.isfinite(vectors.scale)
    return np.isfinite(vectors).all(1)


def check_vectors(vectors: ItemVectors, what: str = "item vectors") -> ItemVectors:
    """``vectors`` checked: a float matrix as :func:`as_matrix` gives it, int8 vectors with
    finite scales."""
    if not isinstance(vectors, Int8Vectors):
        return as_matrix(vectors, what)
    bad = ~finite_rows(vectors)
    if bad.any():
        raise EvorecError(f"{what}: row {int(np.flatnonzero(bad)[0])} is not finite")
    return vectors


@dataclass(frozen=True)
class Fallback:
    """What ranks the queries the model cannot: ``rows`` marks them (boolean, one per
    query), ``scores`` gives every item's score for them (e.g. its popularity)."""

    rows: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Ranking:
    """The top items of each query, best first; padding is ``-inf`` / ``-1``."""

    scores: np.ndarray  # [n_queries, width] float32
    items: np.ndarray  # [n_queries, width] int64 item indices
    fallback: np.ndarray  # [n_queries] bool: ranked by the fallback, not the model


def rank(
    k: int,
    *,
    queries: np.ndarray | None = None,
    items: ItemIndex | ItemVectors | None = None,
    scores: torch.Tensor | None = None,
    exclude: Exclusions | None = None,
    allowed: np.ndarray | None = None,
    fallback: Fallback | None = None,
) -> Ranking:
    """Top-``k`` items of each query (``min(k, n_items)`` columns).

    The queries that ``fallback`` leaves to the model (all of them without one) are given in
    order either as ``queries`` (interest vectors ``i``) with ``items`` (an ``ItemIndex``
    searched, or the item vectors ``v`` scored exactly), or as ``scores`` (each query's score
    of every item, ``[n, n_items]``, e.g. ``Recommender.score``; filtered in place).
    ``exclude[r]`` lists the item indices never returned for query ``r``; ``allowed`` is a
    boolean mask over all items that every result must satisfy."""
    k = check_k(k)
    both = scores is not None and (queries is not None or items is not None)
    if both or (queries is not None and items is None):
        raise EvorecError("rank takes queries with items (an index or the item vectors), or scores")
    model_input = queries if scores is None else scores
    if model_input is None and fallback is None:
        raise EvorecError("rank needs queries with items, scores or a fallback")
    n_items = _n_items(items, scores, fallback)
    n_queries = len(model_input) if fallback is None else len(fallback.rows)
    fallback_mask = np.zeros(n_queries, bool) if fallback is None else np.asarray(fallback.rows)
    if fallback_mask.dtype != np.bool_ or fallback_mask.shape != (n_queries,):
        raise EvorecError(f"fallback rows must be a boolean mask of {n_queries} queries")
    model_rows, fallback_rows = np.flatnonzero(~fallback_mask), np.flatnonzero(fallback_mask)
    given = 0 if model_input is None else len(model_input)
    if given != len(model_rows):
        raise EvorecError(f"{given} rows of model input for {len(model_rows)} model queries")
    excluded = None if exclude is None else as_exclude(exclude, n_queries, n_items)
    allowed = as_allowed(allowed, n_items)
    width = min(k, n_items)
    out_scores = np.full((n_queries, width), -np.inf, dtype=np.float32)
    out_items = np.full((n_queries, width), -1, dtype=np.int64)
    if len(model_rows):
        part = None if excluded is None else [excluded[r] for r in model_rows]
        if scores is not None:
            found = _top_of_scores(scores, width, part, allowed)
        elif isinstance(items, (np.ndarray, Int8Vectors)):
            vectors = items
            if not isinstance(items, Int8Vectors):
                vectors = np.ascontiguousarray(items, dtype=np.float32)
            matrix = as_matrix(queries, "queries", vectors.shape[1])
            found = exact_search(vectors, matrix, width, part, allowed)
        else:
            found = items.search(queries, width, part, allowed)
        out_scores[model_rows], out_items[model_rows] = found
    if len(fallback_rows):
        part = None if excluded is None else [excluded[r] for r in fallback_rows]
        vectors = np.asarray(fallback.scores, dtype=np.float32)[:, None]
        ones = np.ones((len(fallback_rows), 1), dtype=np.float32)
        found = exact_search(vectors, ones, width, part, allowed)
        out_scores[fallback_rows], out_items[fallback_rows] = found
    return Ranking(out_scores, out_items, fallback_mask)


def exclude_seen(scores: torch.Tensor, histories: Histories) -> None:
    """Score every item of each row's history ``-inf``, in place."""
    rows, items = torch.from_numpy(histories.rows), torch.from_numpy(histories.items)
    scores[rows.to(scores.device), items.to(scores.device)] = -torch.inf


def exact_search(
    vectors: ItemVectors,
    queries: np.ndarray,
    k: int,
    exclude: list[np.ndarray] | None,
    allowed: np.ndarray | None,
) -> Result:
    """Exact top-``k`` by inner product over the allowed items (``[n, k]``, padded); a
    sparse allow-list is scored on its own rows, a dense one by masking. ``exclude`` rows
    must be sorted and unique (:func:`as_exclude`); ``vectors`` are float32 (C-contiguous)
    or int8 (:func:`inner_products`)."""
    n_queries = len(queries)
    scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    items = np.full((n_queries, k), -1, dtype=np.int64)
    subset = None
    if allowed is not None and 2 * int(allowed.sum()) < len(vectors):
        subset = np.flatnonzero(allowed)
    candidates = vectors
    if subset is not None:
        candidates = vectors.take(subset) if isinstance(vectors, Int8Vectors) else vectors[subset]
    blocked = None if allowed is None or subset is not None else torch.from_numpy(~allowed)
    if len(candidates) == 0 or n_queries == 0:
        return scores, items
    chunk = max(1, SCORE_BUDGET // len(candidates))
    with torch.inference_mode():
        for start in range(0, n_queries, chunk):
            stop = min(start + chunk, n_queries)
            block = inner_products(torch.from_numpy(queries[start:stop]), candidates)
            if blocked is not None:
                block.masked_fill_(blocked, -torch.inf)
            if exclude is not None:
                rows, cols = pairs(exclude[start:stop])
                if subset is not None:
                    pos = np.minimum(np.searchsorted(subset, cols), len(subset) - 1)
                    hit = subset[pos] == cols
                    rows, cols = rows[hit], pos[hit]
                block[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
            top_scores, top_items = _top(block, k)
            if subset is not None:
                top_items = np.where(top_items >= 0, subset[top_items], -1)
            scores[start:stop], items[start:stop] = top_scores, top_items
    return scores, items


def _top_of_scores(
    scores: torch.Tensor, k: int, exclude: list[np.ndarray] | None, allowed: np.ndarray | None
) -> Result:
    """Top-``k`` of a full score matrix after the filters (applied in place)."""
    with torch.inference_mode():
        if allowed is not None:
            scores[:, torch.from_numpy(~allowed).to(scores.device)] = -torch.inf
        if exclude is not None:
            rows, cols = (torch.from_numpy(a).to(scores.device) for a in pairs(exclude))
            scores[rows, cols] = -torch.inf
        return _top(scores, k)


def _top(block: torch.Tensor, k: int) -> Result:
    """The ``k`` best columns of each row (``[n, k]``): ``-inf`` scores, and columns past
    the block's width, are padding (item ``-1``)."""
    top = torch.topk(block, min(k, block.shape[1]), dim=1)
    top_scores = top.values.float().cpu().numpy()
    top_items = np.where(np.isfinite(top_scores), top.indices.cpu().numpy(), -1)
    missing = k - top_scores.shape[1]
    if missing:
        top_scores = np.pad(top_scores, ((0, 0), (0, missing)), constant_values=-np.inf)
        top_items = np.pad(top_items, ((0, 0), (0, missing)), constant_values=-1)
    return top_scores, top_items


# -- input checks, shared with the indexes ---------------------------------------------------


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise EvorecError(f"k must be a positive integer, got {k!r}")
    return int(k)


def as_allowed(allowed: np.ndarray | None, n_items: int) -> np.ndarray | None:
    """``allowed`` checked to be a boolean mask over the ``n_items`` items."""
    if allowed is None:
        return None
    mask = np.asarray(allowed)
    if mask.dtype != np.bool_ or mask.shape != (n_items,):
        raise EvorecError(
            f"allowed must be a boolean mask of shape ({n_items},), got {mask.dtype} {mask.shape}"
        )
    return mask


def as_matrix(values: np.ndarray, what: str, dim: int | None = None) -> np.ndarray:
    """``values`` as a C-contiguous finite float32 matrix (of ``dim`` columns)."""
    matrix = np.asarray(values)
    if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
        want = f"[n, {dim}]" if dim is not None else "[n, dim]"
        raise EvorecError(f"{what} must be a {want} matrix, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number):
        raise EvorecError(f"{what} must be numeric, got {matrix.dtype}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    bad = ~np.isfinite(matrix).all(1)
    if bad.any():
        raise EvorecError(f"{what}: row {int(np.flatnonzero(bad)[0])} is not finite")
    return matrix


def as_exclude(exclude: Exclusions, n_queries: int, n_items: int) -> list[np.ndarray]:
    """One sorted, unique int64 array of item indices per query."""
    if len(exclude) != n_queries:
        raise EvorecError(f"exclude has {len(exclude)} rows for {n_queries} queries")
    if isinstance(exclude, Histories):
        lengths, flat = exclude.lengths, exclude.items.astype(np.int64)
    else:
        arrays = [np.asarray(values).ravel() for values in exclude]
        for r, row in enumerate(arrays):
            if row.size and row.dtype.kind not in "iu":
                raise EvorecError(f"exclude[{r}]: item indices must be integers, got {row.dtype}")
        lengths = np.fromiter((len(row) for row in arrays), dtype=np.int64, count=n_queries)
        flat = np.concatenate(arrays).astype(np.int64) if n_queries else np.zeros(0, np.int64)
    bad = (flat < 0) | (flat >= n_items)
    if bad.any():
        at = int(np.argmax(bad))
        r = int(np.searchsorted(np.cumsum(lengths), at, side="right"))
        raise UnknownIdError(f"exclude[{r}]: item index {flat[at]} is outside 0..{n_items - 1}")
    # sorted unique (row, item) keys: one vectorised pass instead of a sort per row
    keys = np.unique(np.repeat(np.arange(n_queries), lengths) * n_items + flat)
    counts = np.bincount(keys // n_items, minlength=n_queries)
    return np.split(keys % n_items, np.cumsum(counts)[:-1])


def pairs(exclude: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of per-row item lists, as two flat arrays."""
    lengths = [len(e) for e in exclude]
    rows = np.repeat(np.arange(len(exclude)), lengths)
    items = np.concatenate(exclude) if exclude else np.zeros(0, np.int64)
    return rows, items.astype(np.int64)


def _n_items(
    items: ItemIndex | ItemVectors | None,
    scores: torch.Tensor | None,
    fallback: Fallback | None,
) -> int:
    """The number of items, the same in every source of scores given."""
    sizes = {}
    if isinstance(items, (np.ndarray, Int8Vectors)):
        sizes["item vectors"] = len(items)
    elif items is not None:
        sizes["index"] = items.n_items
    if scores is not None:
        if scores.ndim != 2:
            raise EvorecError(f"scores must be a [n, n_items] matrix, got {tuple(scores.shape)}")
        sizes["scores"] = scores.shape[1]
    if fallback is not None:
        sizes["fallback"] = len(fallback.scores)
    if len(set(sizes.values())) > 1:
        raise EvorecError(f"different numbers of items: {sizes}")
    n_items = next(iter(sizes.values()))
    if n_items == 0:
        raise EvorecError("no items to rank")
    return n_items
