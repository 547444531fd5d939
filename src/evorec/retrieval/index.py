"""Top-K inner-product search over item vectors: exact, or approximate with faiss.

Every index answers the same question: the ``k`` items with the largest ``q · v`` for each
query ``q``, best first, never an item excluded for that query or outside the allow-list.
The ANN indexes (HNSW, IVF) over-fetch and refill so that filters cost no results: a query
gets ``k`` items whenever ``k`` candidates exist, padded with ``-inf`` / ``-1`` only when
fewer do.

The exact index holds the item vectors themselves: float32, or an int8 model's
:class:`~evorec.retrieval.ranking.Int8Vectors` (scored as int8, never dequantised whole). An
ANN index over int8 vectors is built from them dequantised a block of rows at a time (IVF
k-means trains on its sample of at most ``train_size`` rows dequantised) and keeps them for
its exact fallbacks (HNSW's graph stores float32 vectors, which it falls back to).
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from evorec.errors import EvorecError, ModelDirError
from evorec.io import write_atomic
from evorec.modeldir import recorded_retrieval
from evorec.retrieval.config import IndexKind, RetrievalConfig, retrieval_config
from evorec.retrieval.ranking import (
    DEQUANTISED_ROWS,
    Exclusions,
    Int8Vectors,
    ItemVectors,
    Result,
    as_allowed,
    as_exclude,
    as_matrix,
    check_k,
    check_vectors,
    dense_rows,
    exact_search,
    pairs,
)

log = logging.getLogger(__name__)

INDEX_FILE_PREFIX = "item-index-"


class ItemIndex(ABC):
    """Item vectors searched by inner product, exactly or through a faiss index."""

    kind: ClassVar[IndexKind]

    def __init__(self, vectors: ItemVectors, config: RetrievalConfig) -> None:
        self.vectors = vectors  # [n_items, dim] float32 or int8, for exact scoring
        self.config = config

    @property
    def n_items(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Exclusions | None = None,
        allowed: np.ndarray | None = None,
    ) -> Result:
        """Top-``k`` items for each query row: ``(scores [n, k], items [n, k])``.

        ``exclude[r]`` lists item indices never returned for query ``r`` (e.g. its history);
        ``allowed`` is a boolean mask over all items that every result must satisfy.
        """
        queries = as_matrix(queries, "queries", self.dim)
        k = check_k(k)
        excluded = None if exclude is None else as_exclude(exclude, len(queries), self.n_items)
        return self._search(queries, k, excluded, as_allowed(allowed, self.n_items))

    @abstractmethod
    def _search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: list[np.ndarray] | None,
        allowed: np.ndarray | None,
    ) -> Result:
        """:meth:`search` on validated input (``exclude`` rows sorted and unique)."""

    @abstractmethod
    def stored(self) -> faiss.Index:
        """The faiss index that :meth:`save` writes."""

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` atomically (a temp file renamed into place)."""
        index = self.stored()
        return write_atomic(path, lambda tmp: faiss.write_index(index, str(tmp)))


class ExactIndex(ItemIndex):
    """Brute force: every item scored (torch matmul + top-k, in chunks of queries) against
    the vectors held, float32 or int8."""

    kind = "exact"

    def stored(self) -> faiss.Index:
        """A flat inner-product index of the vectors (float32 only: int8 vectors live in
        their model directory's parameters, not in an index file)."""
        if isinstance(self.vectors, Int8Vectors):
            raise EvorecError("an exact index of int8 item vectors is not saved")
        flat = faiss.IndexFlatIP(self.dim)
        flat.add(self.vectors)
        return flat

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: list[np.ndarray] | None,
        allowed: np.ndarray | None,
    ) -> Result:
        return exact_search(self.vectors, queries, k, exclude, allowed)


class ANNIndex(ItemIndex):
    """An approximate index held in faiss; filters are applied by over-fetching and
    refilling, and exact fallbacks score ``vectors``."""

    def __init__(self, index: faiss.Index, vectors: ItemVectors, config: RetrievalConfig):
        super().__init__(vectors, config)
        self.index = index

    def stored(self) -> faiss.Index:
        return self.index

    @abstractmethod
    def _params(self, fetch: int, attempt: int, sel: Any, share: float) -> faiss.SearchParameters:
        """Search parameters of refill ``attempt`` (0 first) fetching ``fetch`` items when a
        ``share`` of the items is allowed: the effort grows as ``1 / share`` so that a
        filtered search meets as many allowed candidates as an unfiltered one."""

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: list[np.ndarray] | None,
        allowed: np.ndarray | None,
    ) -> Result:
        n_allowed = self.n_items if allowed is None else int(allowed.sum())
        if allowed is not None and n_allowed <= self.config.exact_max_allowed:
            return exact_search(self.vectors, queries, k, exclude, allowed)
        n_queries = len(queries)
        n_excluded = np.zeros(n_queries, dtype=np.int64)
        if exclude is not None:
            n_excluded[:] = [len(e) if allowed is None else int(allowed[e].sum()) for e in exclude]
        want = np.minimum(k, n_allowed - n_excluded)  # results each query can have
        scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        items = np.full((n_queries, k), -1, dtype=np.int64)
        # The allow-list goes to faiss as a bitmap selector (bit i of byte i // 8).
        bitmap = None if allowed is None else np.packbits(allowed, bitorder="little")
        sel = None if bitmap is None else faiss.IDSelectorBitmap(bitmap)
        fetch = _next_power_of_two(k + n_excluded)
        pending = np.flatnonzero(want > 0)
        attempt = 0
        while len(pending):
            # Fetching half the candidates or more: exact scoring is cheaper and complete.
            exhausted = fetch[pending] * 2 > n_allowed
            if exhausted.any():
                rows = pending[exhausted]
                part = None if exclude is None else [exclude[r] for r in rows]
                scores[rows], items[rows] = exact_search(
                    self.vectors, queries[rows], k, part, allowed
                )
                pending = pending[~exhausted]
            short = []
            for size in np.unique(fetch[pending]):
                rows = pending[fetch[pending] == size]
                part = None if exclude is None else [exclude[r] for r in rows]
                params = self._params(int(size), attempt, sel, n_allowed / self.n_items)
                found = self._fetch(queries[rows], k, int(size), params, part, allowed)
                full = found[2] >= want[rows]
                scores[rows[full]] = found[0][full]
                items[rows[full]] = found[1][full]
                short.append(rows[~full])
            pending = np.concatenate(short) if short else pending[:0]
            fetch[pending] *= 2
            attempt += 1
        # Past each query's own ``want``: padding (fewer candidates than k exist).
        beyond = np.arange(k)[None, :] >= want[:, None]
        scores[beyond], items[beyond] = -np.inf, -1
        return scores, items

    def _fetch(
        self,
        queries: np.ndarray,
        k: int,
        fetch: int,
        params: faiss.SearchParameters,
        exclude: list[np.ndarray] | None,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ANN-search ``fetch`` items per query and keep the best ``k`` that pass the filters:
        ``(scores [n, k], items [n, k], number that passed)``."""
        found_scores, found_items = self.index.search(queries, fetch, params=params)
        valid = found_items >= 0
        if allowed is not None:
            valid &= allowed[np.maximum(found_items, 0)]
        if exclude is not None:
            valid &= ~_excluded(found_items, exclude, self.n_items)
        order = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # valid first, in rank order
        return (
            np.take_along_axis(found_scores, order, 1),
            np.take_along_axis(found_items, order, 1),
            valid.sum(1),
        )


class HNSWIndex(ANNIndex):
    """faiss ``IndexHNSWFlat`` in inner-product space."""

    kind = "hnsw"

    def _params(self, fetch: int, attempt: int, sel: Any, share: float) -> faiss.SearchParameters:
        # the beam keeps ef_search of slack below the deepest rank asked for
        ef = int(np.ceil((self.config.ef_search + fetch) / share))
        params = faiss.SearchParametersHNSW(efSearch=min(ef, self.n_items))
        if sel is not None:
            params.sel = sel
        return params


class IVFIndex(ANNIndex):
    """faiss ``IndexIVFFlat`` in inner-product space; each refill scans twice the cells."""

    kind = "ivf"

    def _params(self, fetch: int, attempt: int, sel: Any, share: float) -> faiss.SearchParameters:
        nprobe = min(self.index.nlist, int(np.ceil(self.config.nprobe * 2**attempt / share)))
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if sel is not None:
            params.sel = sel
        return params


class IVFSQIndex(IVFIndex):
    """faiss ``IndexIVFScalarQuantizer``: IVF cells of vectors stored as 8-bit codes per
    dimension (a quarter of float32), scored by inner product on the decoded codes."""

    kind = "sq8"


class IVFPQIndex(IVFIndex):
    """faiss ``IndexIVFPQ``: IVF cells of product-quantised vectors (``pq_m`` bytes each)."""

    kind = "pq"


LOSSY_KINDS = ("sq8", "pq")  # indexes whose stored vectors only approximate the model's


def _ivf_index(kind: IndexKind, dim: int, nlist: int, config: RetrievalConfig) -> faiss.IndexIVF:
    """An untrained IVF index of ``kind`` (``ivf``, ``sq8`` or ``pq``) by inner product."""
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "sq8":
        return faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    if kind == "pq":
        m = config.pq_m or max(1, dim // 4)
        if dim % m:
            raise EvorecError(f"retrieval pq_m={m} does not divide the vector width {dim}")
        return faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)


IVF_CLASSES: dict[str, type[IVFIndex]] = {"ivf": IVFIndex, "sq8": IVFSQIndex, "pq": IVFPQIndex}


def build_index(
    item_vectors: ItemVectors, config: RetrievalConfig | dict[str, Any] | None = None
) -> ItemIndex:
    """An index over ``item_vectors`` (``[n_items, dim]``, float or int8) of the configured
    kind."""
    config = retrieval_config(config)
    vectors = check_vectors(item_vectors)
    n_items, dim = vectors.shape
    if n_items == 0:
        raise EvorecError("item vectors: no items to index")
    kind = config.resolved_kind(n_items)
    if kind == "exact":
        return ExactIndex(vectors, config)
    if kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = config.ef_construction
        _add(hnsw, vectors)
        return HNSWIndex(hnsw, _flat_vectors(faiss.downcast_index(hnsw.storage)), config)
    nlist = config.nlist or int(np.clip(4 * np.sqrt(n_items), 1, max(1, n_items // 39)))
    if nlist > n_items:
        raise EvorecError(f"retrieval nlist={nlist} exceeds the {n_items} items to index")
    ivf = _ivf_index(kind, dim, nlist, config)
    ivf.cp.seed = config.seed
    rows: np.ndarray | slice = slice(None)
    if n_items > config.train_size:
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(n_items, config.train_size, replace=False))
    ivf.train(dense_rows(vectors, rows))
    _add(ivf, vectors)
    return IVF_CLASSES[kind](ivf, vectors, config)


def _add(index: faiss.Index, vectors: ItemVectors) -> None:
    """Add ``vectors`` to ``index``: float32 at once, int8 dequantised a block at a time."""
    if not isinstance(vectors, Int8Vectors):
        index.add(vectors)
        return
    for start in range(0, len(vectors), DEQUANTISED_ROWS):
        index.add(vectors.dense(slice(start, start + DEQUANTISED_ROWS)))


def load_index(
    path: str | Path, config: RetrievalConfig | dict[str, Any] | None = None
) -> ItemIndex:
    """An index saved with :meth:`ItemIndex.save`; ``config`` gives the search settings."""
    config = retrieval_config(config)
    path = Path(path)
    if not path.is_file():
        raise ModelDirError(f"{path}: item index not found")
    try:
        index = faiss.read_index(str(path))  # already of its concrete class
        if index.metric_type != faiss.METRIC_INNER_PRODUCT or index.ntotal == 0:
            raise ModelDirError(f"{path}: not an inner-product item index")
        if isinstance(index, faiss.IndexHNSWFlat):
            loaded: ItemIndex = HNSWIndex(
                index, _flat_vectors(faiss.downcast_index(index.storage)), config
            )
        elif isinstance(index, faiss.IndexIVFFlat):
            loaded = IVFIndex(index, _ivf_vectors(index), config)  # checks the item ids
        elif isinstance(index, faiss.IndexIVFScalarQuantizer):
            loaded = IVFSQIndex(index, _ivf_vectors(index), config)  # decoded codes
        elif isinstance(index, faiss.IndexIVFPQ):
            loaded = IVFPQIndex(index, _ivf_vectors(index), config)
        elif isinstance(index, faiss.IndexFlat):
            loaded = ExactIndex(_flat_vectors(index).copy(), config)
        else:
            raise ModelDirError(f"{path}: unsupported item index type {type(index).__name__}")
    except (RuntimeError, MemoryError) as exc:  # a corrupt size can make faiss over-allocate
        raise ModelDirError(f"{path}: cannot read item index ({_faiss_message(exc)})") from None
    if config.kind != "auto" and config.kind != loaded.kind:
        raise ModelDirError(
            f"{path}: index kind is {loaded.kind}, the config asks for {config.kind}"
        )
    return loaded


def load_or_build_index(
    directory: str | Path,
    item_vectors: ItemVectors,
    config: RetrievalConfig | dict[str, Any] | None = None,
) -> ItemIndex:
    """The ANN index of ``item_vectors`` saved in ``directory`` (a model directory), built
    and saved there first if missing; exact indexes are built, never saved.

    The file name holds a digest of the vectors and build settings, so an index of other
    vectors or settings is never reused; it is replaced. Without ``config``, the settings
    the directory's manifest records (a compressed model's), else the defaults."""
    directory = Path(directory)
    config = retrieval_config(config if config is not None else recorded_retrieval(directory))
    vectors = check_vectors(item_vectors)
    kind = config.resolved_kind(len(vectors))
    if kind == "exact":
        return build_index(vectors, config)
    build = config.model_dump(
        include={"hnsw_m", "ef_construction"}
        if kind == "hnsw"
        else {"nlist", "train_size", "seed", *(("pq_m",) if kind == "pq" else ())}
    )
    digest = hashlib.sha256()
    for part in (vectors.codes, vectors.scale) if isinstance(vectors, Int8Vectors) else (vectors,):
        digest.update(np.ascontiguousarray(part).data)
    digest.update(json.dumps({"kind": kind, **build}, sort_keys=True).encode())
    path = directory / f"{INDEX_FILE_PREFIX}{kind}-{digest.hexdigest()[:16]}.faiss"
    if path.is_file():
        loaded = load_index(path, config)
        if kind in LOSSY_KINDS and loaded.vectors.shape == vectors.shape:
            # codes only approximate the vectors (the digest names them): score exactly
            # with the model's own where the search falls back to exact scoring
            loaded.vectors = vectors
        elif not _holds(loaded.vectors, vectors):
            raise ModelDirError(
                f"{path}: the item index does not hold the model's item vectors (corrupt); "
                "delete it to have it rebuilt"
            )
        return loaded
    index = build_index(vectors, config)
    try:
        index.save(path)
    except OSError as exc:  # e.g. a read-only model directory: serve, rebuild next time
        log.warning("%s: item index not saved (%s)", path, exc.strerror or exc)
        return index
    for stale in directory.glob(f"{INDEX_FILE_PREFIX}*.faiss"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return index


def _faiss_message(exc: BaseException) -> str:
    """The last line of a faiss error (the failed check), without the C++ location."""
    lines = str(exc).strip().splitlines()
    last = lines[-1] if lines else type(exc).__name__
    return last.split(" Error: ", 1)[-1].strip()


def _holds(stored: np.ndarray, vectors: ItemVectors) -> bool:
    """Whether an index's ``stored`` float vectors are ``vectors`` (int8 ones compared a
    dequantised block at a time)."""
    if stored.shape != vectors.shape:
        return False
    if not isinstance(vectors, Int8Vectors):
        return np.array_equal(stored, vectors)
    blocks = range(0, len(vectors), DEQUANTISED_ROWS)
    return all(
        np.array_equal(
            stored[s : s + DEQUANTISED_ROWS], vectors.dense(slice(s, s + DEQUANTISED_ROWS))
        )
        for s in blocks
    )


def _excluded(found: np.ndarray, exclude: list[np.ndarray], n_items: int) -> np.ndarray:
    """Which entries of ``found`` (``[n, fetch]`` item indices) row ``r`` excludes."""
    rows, items = pairs(exclude)
    keys = np.arange(len(found))[:, None] * (n_items + 1) + found
    return np.isin(keys, rows * (n_items + 1) + items)


def _next_power_of_two(values: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(values, 1))).astype(np.int64)).astype(np.int64)


def _flat_vectors(flat: faiss.IndexFlat) -> np.ndarray:
    """The vectors a flat index stores, as a view (no copy; valid while it lives)."""
    n, dim = flat.ntotal, flat.d
    return faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)


def _ivf_vectors(ivf: faiss.IndexIVF) -> np.ndarray:
    """The vectors of an IVF index in item order (a copy; IVF stores them by cell; decoded
    from their codes for the quantised kinds)."""
    ivf.make_direct_map()
    vectors = ivf.reconstruct_n(0, ivf.ntotal)
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    return np.ascontiguousarray(vectors, dtype=np.float32)
