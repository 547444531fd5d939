"""The one ranking function: seen items, allow-lists, the popularity fallback, padding,
and the same answer from item vectors, a score matrix and every index kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_retrieval import brute_force

import evorec.retrieval.index as index_module
import evorec.retrieval.ranking as ranking_module
from evorec.data.histories import Histories
from evorec.errors import EvorecError, UnknownIdError
from evorec.models.compression import encode_int8
from evorec.retrieval import Fallback, build_index, load_or_build_index, rank
from evorec.retrieval.ranking import Int8Vectors, inner_products, unit_length

N_ITEMS, DIM, N_QUERIES = 800, 12, 30


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return np.random.default_rng(4).standard_normal((N_QUERIES, DIM)).astype(np.float32)


def listed(items: np.ndarray) -> list[list[int]]:
    return [[int(i) for i in row if i >= 0] for row in items]


def seen_items(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(N_ITEMS, rng.integers(0, 40), replace=False) for _ in range(n)]


def test_seen_items_are_never_returned(vectors: np.ndarray, queries: np.ndarray) -> None:
    seen = seen_items(N_QUERIES, 5)
    ranking = rank(10, queries=queries, items=vectors, exclude=seen)
    assert listed(ranking.items) == brute_force(vectors, queries, 10, seen)
    for row, excluded in zip(ranking.items, seen, strict=True):
        assert not set(row) & set(excluded.tolist())
    assert not ranking.fallback.any()


def test_histories_exclude_their_own_items(vectors: np.ndarray, queries: np.ndarray) -> None:
    seen = seen_items(N_QUERIES, 6)
    history = Histories.from_lists([s.tolist() for s in seen])
    by_history = rank(10, queries=queries, items=vectors, exclude=history)
    by_lists = rank(10, queries=queries, items=vectors, exclude=seen)
    np.testing.assert_array_equal(by_history.items, by_lists.items)


def test_allow_list_bounds_every_result(vectors: np.ndarray, queries: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    for share in (0.05, 0.8):  # a sparse allow-list is scored on its rows, a dense one masked
        allowed = rng.random(N_ITEMS) < share
        seen = seen_items(N_QUERIES, 8)
        ranking = rank(10, queries=queries, items=vectors, exclude=seen, allowed=allowed)
        assert listed(ranking.items) == brute_force(vectors, queries, 10, seen, allowed)
        assert allowed[ranking.items[ranking.items >= 0]].all()


def test_fallback_ranks_the_rows_the_model_cannot(vectors: np.ndarray, queries: np.ndarray) -> None:
    popularity = np.random.default_rng(9).permutation(N_ITEMS).astype(np.float32)
    use_fallback = np.zeros(N_QUERIES, bool)
    use_fallback[[0, 7, 29]] = True
    seen = seen_items(N_QUERIES, 10)
    allowed = np.random.default_rng(11).random(N_ITEMS) < 0.5
    ranking = rank(
        6,
        queries=queries[~use_fallback],
        items=vectors,
        exclude=seen,
        allowed=allowed,
        fallback=Fallback(use_fallback, popularity),
    )
    np.testing.assert_array_equal(ranking.fallback, use_fallback)
    model_rows = np.flatnonzero(~use_fallback)
    expected = brute_force(vectors, queries[model_rows], 6, [seen[r] for r in model_rows], allowed)
    assert listed(ranking.items[model_rows]) == expected
    for r in np.flatnonzero(use_fallback):  # most popular first, through the same filters
        ok = allowed.copy()
        ok[seen[r]] = False
        candidates = np.flatnonzero(ok)
        best = candidates[np.argsort(-popularity[candidates])[:6]]
        assert ranking.items[r].tolist() == best.tolist()
        assert ranking.scores[r].tolist() == popularity[best].tolist()
    # every query by the fallback: no model input at all
    everyone = rank(3, fallback=Fallback(np.ones(2, bool), popularity))
    assert everyone.items.tolist() == [np.argsort(-popularity)[:3].tolist()] * 2


def test_k_beyond_the_candidates_pads(vectors: np.ndarray, queries: np.ndarray) -> None:
    allowed = np.zeros(N_ITEMS, bool)
    allowed[[3, 50, 400]] = True
    exclude = [np.array([50])] + [np.zeros(0, np.int64)] * (N_QUERIES - 1)
    ranking = rank(5, queries=queries, items=vectors, exclude=exclude, allowed=allowed)
    assert ranking.items.shape == (N_QUERIES, 5)
    found = (ranking.items >= 0).sum(1)
    assert found[0] == 2 and (found[1:] == 3).all()  # query 0 excludes one of the three
    assert np.isneginf(ranking.scores[ranking.items < 0]).all()
    assert np.isfinite(ranking.scores[ranking.items >= 0]).all()
    # never wider than the catalogue
    whole = rank(N_ITEMS + 50, queries=queries[:2], items=vectors)
    assert whole.items.shape == (2, N_ITEMS)
    assert sorted(whole.items[0].tolist()) == list(range(N_ITEMS))


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "exact"},
        {"kind": "ivf", "exact_max_allowed": 0, "nprobe": 1000},  # every cell: exact
        {"kind": "hnsw", "exact_max_allowed": 0, "ef_search": 1000},  # beam over every item
    ],
    ids=["exact", "ivf", "hnsw"],
)
def test_vectors_scores_and_indexes_agree(
    vectors: np.ndarray, queries: np.ndarray, config: dict
) -> None:
    seen = seen_items(N_QUERIES, 12)
    allowed = np.random.default_rng(13).random(N_ITEMS) < 0.6
    options = {"exclude": seen, "allowed": allowed}
    by_vectors = rank(10, queries=queries, items=vectors, **options)
    by_index = rank(10, queries=queries, items=build_index(vectors, config), **options)
    by_scores = rank(10, scores=torch.from_numpy(queries @ vectors.T), **options)
    for other in (by_index, by_scores):
        np.testing.assert_array_equal(other.items, by_vectors.items)
        np.testing.assert_allclose(other.scores, by_vectors.scores, rtol=1e-5)


def int8(vectors: np.ndarray) -> Int8Vectors:
    """``vectors`` as an int8-compressed model holds them."""
    encoded = encode_int8(torch.from_numpy(vectors))
    return Int8Vectors(encoded["q"].numpy(), encoded["scale"].numpy())


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Int8 rows dequantised 64 at a time: the 800 items take several blocks."""
    monkeypatch.setattr(ranking_module, "DEQUANTISED_ROWS", 64)
    monkeypatch.setattr(index_module, "DEQUANTISED_ROWS", 64)


def never_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, fail when more than 64 int8 rows are dequantised at once (a spy on the
    one method that dequantises)."""
    rows = Int8Vectors.dense

    def bounded(self: Int8Vectors, which: np.ndarray | slice) -> np.ndarray:
        block = rows(self, which)
        assert len(block) <= 64, f"{len(block)} int8 rows dequantised at once"
        return block

    monkeypatch.setattr(Int8Vectors, "dense", bounded)


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "exact"},
        {"kind": "ivf", "exact_max_allowed": 0, "nprobe": 1000},
        {"kind": "hnsw", "exact_max_allowed": 0, "ef_search": 1000},
    ],
    ids=["exact", "ivf", "hnsw"],
)
@pytest.mark.usefixtures("small_blocks")
def test_int8_vectors_rank_as_their_dequantised_floats(
    vectors: np.ndarray, queries: np.ndarray, config: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    quantised = int8(vectors)
    floats = np.asarray(quantised.codes, np.float32) * quantised.scale[:, None]  # as decoded
    assert floats.dtype == np.float32 and not np.array_equal(floats, vectors)
    built = build_index(quantised, config)  # IVF trains on a sample dequantised whole
    if config["kind"] != "hnsw":  # HNSW keeps float vectors in its graph's storage
        assert built.vectors is quantised
    never_whole(monkeypatch)
    rng = np.random.default_rng(14)
    for share in (0.05, 0.6):  # a sparse allow-list is scored on its rows, a dense one masked
        options = {"exclude": seen_items(N_QUERIES, 15), "allowed": rng.random(N_ITEMS) < share}
        expected = rank(10, queries=queries, items=floats, **options)
        for items in (quantised, built):
            found = rank(10, queries=queries, items=items, **options)
            np.testing.assert_array_equal(found.items, expected.items)
            np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5)


@pytest.mark.usefixtures("small_blocks")
def test_int8_scores_and_unit_vectors_match_the_dequantised_matrix(
    vectors: np.ndarray, queries: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    never_whole(monkeypatch)
    quantised = int8(vectors)
    floats = np.asarray(quantised.codes, np.float32) * quantised.scale[:, None]
    scores = inner_products(torch.from_numpy(queries), quantised)
    np.testing.assert_allclose(scores.numpy(), queries @ floats.T, rtol=1e-5, atol=1e-5)
    unit = unit_length(quantised)
    assert isinstance(unit, Int8Vectors) and unit.codes is quantised.codes  # no copy
    unit_floats = np.asarray(unit.codes, np.float32) * unit.scale[:, None]
    np.testing.assert_allclose(unit_floats, unit_length(floats), rtol=1e-5, atol=1e-6)
    assert quantised.nbytes == N_ITEMS * DIM + 4 * N_ITEMS


def test_int8_vectors_index_files_are_reused_and_exact_ones_are_not_saved(
    vectors: np.ndarray, tmp_path
) -> None:
    quantised = int8(vectors)
    for kind in ("hnsw", "sq8"):
        first = load_or_build_index(tmp_path, quantised, {"kind": kind, "nlist": 8})
        (saved,) = tmp_path.glob(f"item-index-{kind}-*.faiss")
        stamp = saved.stat().st_mtime_ns
        again = load_or_build_index(tmp_path, quantised, {"kind": kind, "nlist": 8})
        assert saved.stat().st_mtime_ns == stamp and again.n_items == first.n_items
    assert again.vectors is quantised  # sq8: the exact fallbacks score the model's int8 rows
    with pytest.raises(EvorecError, match="exact index of int8 item vectors is not saved"):
        build_index(quantised, {"kind": "exact"}).save(tmp_path / "exact.faiss")
    with pytest.raises(EvorecError, match="codes must be an int8 matrix"):
        Int8Vectors(vectors, quantised.scale)
    with pytest.raises(EvorecError, match=r"scale must be float32 of shape \(800,\)"):
        Int8Vectors(quantised.codes, quantised.scale[:5])
    bad = Int8Vectors(quantised.codes, quantised.scale.copy())
    bad.scale[7] = np.nan
    with pytest.raises(EvorecError, match="item vectors: row 7 is not finite"):
        build_index(bad)


def test_bad_input_is_refused(vectors: np.ndarray, queries: np.ndarray) -> None:
    popularity = np.ones(N_ITEMS, np.float32)
    with pytest.raises(EvorecError, match="k must be a positive integer"):
        rank(0, queries=queries, items=vectors)
    with pytest.raises(EvorecError, match="rank takes queries with items"):
        rank(5, queries=queries)
    with pytest.raises(EvorecError, match="rank takes queries with items"):
        rank(5, queries=queries, scores=torch.zeros(N_QUERIES, N_ITEMS))
    with pytest.raises(EvorecError, match="needs queries with items, scores or a fallback"):
        rank(5)
    with pytest.raises(EvorecError, match="different numbers of items"):
        rank(
            5, queries=queries, items=vectors, fallback=Fallback(np.zeros(30, bool), popularity[:9])
        )
    with pytest.raises(EvorecError, match="30 rows of model input for 29 model queries"):
        one = np.zeros(N_QUERIES, bool)
        one[0] = True
        rank(5, queries=queries, items=vectors, fallback=Fallback(one, popularity))
    with pytest.raises(EvorecError, match="exclude has 1 rows for 30 queries"):
        rank(5, queries=queries, items=vectors, exclude=[np.array([1])])
    with pytest.raises(UnknownIdError, match=r"exclude\[0\]: item index 800 is outside"):
        rank(5, queries=queries[:1], items=vectors, exclude=[np.array([N_ITEMS])])
    with pytest.raises(EvorecError, match="allowed must be a boolean mask"):
        rank(5, queries=queries, items=vectors, allowed=np.ones(3, bool))
    with pytest.raises(EvorecError, match=r"queries must be a \[n, 12\] matrix"):
        rank(5, queries=queries[:, :4], items=vectors)
