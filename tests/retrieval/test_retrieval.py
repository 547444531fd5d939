"""Item retrieval: exact and ANN (HNSW, IVF) top-K search, filters, refill, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evorec.data.load import from_frame
from evorec.errors import ConfigError, EvorecError, ModelDirError, UnknownIdError
from evorec.models import SASRec
from evorec.retrieval import (
    ExactIndex,
    HNSWIndex,
    ItemIndex,
    IVFIndex,
    build_index,
    load_index,
    load_or_build_index,
    retrieval_config,
)

N_ITEMS, DIM = 3000, 16
# ANN indexes that never fall back to exact scoring for an allow-list
ANN = {
    "hnsw": {"kind": "hnsw", "exact_max_allowed": 0, "hnsw_m": 16, "ef_construction": 80},
    "ivf": {"kind": "ivf", "exact_max_allowed": 0, "nprobe": 8},
}


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Item-like vectors: a Gaussian mixture with varied norms (as learned embeddings are)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    vectors = centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))
    return (vectors * rng.uniform(0.5, 1.5, (n, 1))).astype(np.float32)


def brute_force(
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude: list[np.ndarray] | None = None,
    allowed: np.ndarray | None = None,
) -> list[list[int]]:
    """Reference top-k item lists (only items that pass the filters)."""
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    result = []
    for r, row in enumerate(scores):
        ok = np.ones(len(vectors), bool) if allowed is None else allowed.copy()
        if exclude is not None:
            ok[exclude[r]] = False
        candidates = np.flatnonzero(ok)
        result.append(candidates[np.argsort(-row[candidates], kind="stable")[:k]].tolist())
    return result


def recall(found: np.ndarray, truth: list[list[int]]) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


@pytest.fixture(scope="module")
def items() -> np.ndarray:
    return clustered(N_ITEMS, DIM, seed=0)


@pytest.fixture(scope="module")
def queries(items: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (items[rng.integers(0, N_ITEMS, 200)] + 0.3 * rng.standard_normal((200, DIM))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def ann_indexes(items: np.ndarray) -> dict[str, ItemIndex]:
    return {kind: build_index(items, config) for kind, config in ANN.items()}


def test_exact_index_matches_brute_force_with_filters(items: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    queries = rng.standard_normal((50, DIM)).astype(np.float32)
    exclude = [rng.choice(N_ITEMS, rng.integers(0, 50), replace=False) for _ in range(50)]
    index = build_index(items, {"kind": "exact"})
    assert isinstance(index, ExactIndex)
    for allowed in (None, rng.random(N_ITEMS) < 0.8, rng.random(N_ITEMS) < 0.05):
        scores, found = index.search(queries, 20, exclude, allowed)
        assert found.tolist() == brute_force(items, queries, 20, exclude, allowed)
        expected = np.take_along_axis(queries @ items.T, found, 1)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 0).all()


def test_exact_index_pads_only_when_candidates_run_out(items: np.ndarray) -> None:
    allowed = np.zeros(N_ITEMS, bool)
    allowed[[3, 7, 11, 19]] = True
    query = items[:2]
    scores, found = build_index(items, {"kind": "exact"}).search(query, 5, [[3], []], allowed)
    assert (found[0, :3] >= 0).all() and found[0, 3:].tolist() == [-1, -1]
    assert (found[1, :4] >= 0).all() and found[1, 4] == -1
    assert np.isneginf(scores[0, 3:]).all() and np.isneginf(scores[1, 4])
    assert set(found[0, :3]) == {7, 11, 19}


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_at_10(
    kind: str, ann_indexes: dict[str, ItemIndex], items: np.ndarray, queries: np.ndarray
) -> None:
    truth = brute_force(items, queries, 10)
    _, found = ann_indexes[kind].search(queries, 10)
    assert recall(found, truth) >= 0.9


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_at_10_with_seen_items_filtered(
    kind: str, ann_indexes: dict[str, ItemIndex], items: np.ndarray, queries: np.ndarray
) -> None:
    # each query's "history": its 30 best items, the hardest ones to filter
    exclude = [np.array(t) for t in brute_force(items, queries, 30)]
    truth = brute_force(items, queries, 10, exclude)
    _, found = ann_indexes[kind].search(queries, 10, exclude)
    assert (found >= 0).all()
    assert recall(found, truth) >= 0.9


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_ann_filters_always_honoured_and_refilled(
    kind: str, ann_indexes: dict[str, ItemIndex], items: np.ndarray, data: st.DataObject
) -> None:
    index = ann_indexes[kind]
    seed = data.draw(st.integers(0, 2**32 - 1))
    n_queries = data.draw(st.integers(1, 6))
    k = data.draw(st.integers(1, 40))
    allowed_share = data.draw(st.sampled_from([None, 0.003, 0.02, 0.3, 0.9]))
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((n_queries, DIM)).astype(np.float32)
    allowed = None if allowed_share is None else rng.random(N_ITEMS) < allowed_share
    # histories from short to nearly the whole allowed pool
    exclude = [
        rng.choice(N_ITEMS, rng.integers(0, N_ITEMS), replace=False) for _ in range(n_queries)
    ]
    scores, found = index.search(queries, k, exclude, allowed)
    assert found.shape == scores.shape == (n_queries, k)
    for r in range(n_queries):
        ok = np.ones(N_ITEMS, bool) if allowed is None else allowed.copy()
        ok[exclude[r]] = False
        got = found[r][found[r] >= 0]
        assert ok[got].all()  # nothing excluded or disallowed
        assert len(set(got.tolist())) == len(got)  # no duplicates
        assert len(got) == min(k, int(ok.sum()))  # refilled to k while candidates remain
        assert (found[r, len(got) :] == -1).all() and np.isneginf(scores[r, len(got) :]).all()
        assert (np.diff(scores[r, : len(got)]) <= 0).all()


class CountingIVF(IVFIndex):
    """An IVF index that records each search attempt (0 = first, then refills)."""

    def _params(self, fetch: int, attempt: int, sel: Any, share: float) -> Any:
        self.attempts.append((fetch, attempt))
        return super()._params(fetch, attempt, sel, share)


def test_refill_returns_exactly_k_when_enough_candidates_remain(
    items: np.ndarray, queries: np.ndarray
) -> None:
    built = build_index(items, {**ANN["ivf"], "nprobe": 1})
    index = CountingIVF(built.index, built.vectors, built.config)
    index.attempts = []
    allowed = np.random.default_rng(4).random(N_ITEMS) < 0.6
    exclude = [np.array(t) for t in brute_force(items, queries, 20, allowed=allowed)]
    _, found = index.search(queries, 100, exclude, allowed)
    assert max(attempt for _, attempt in index.attempts) >= 1  # the first fetch fell short
    assert (found >= 0).all()
    for r, row in enumerate(found):
        assert len(set(row.tolist())) == 100
        assert allowed[row].all() and not set(row) & set(exclude[r].tolist())


def test_restrictive_allow_list_is_scored_exactly(items: np.ndarray, queries: np.ndarray) -> None:
    index = build_index(items, {"kind": "hnsw", "hnsw_m": 8, "ef_search": 1, "ef_construction": 8})
    allowed = np.zeros(N_ITEMS, bool)
    allowed[np.random.default_rng(3).choice(N_ITEMS, 100, replace=False)] = True
    _, found = index.search(queries, 10, allowed=allowed)
    assert found.tolist() == brute_force(items, queries, 10, allowed=allowed)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_save_load_round_trip(
    kind: str, items: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    config = ANN.get(kind, {"kind": "exact"})
    index = build_index(items, config)
    path = index.save(tmp_path / "index.faiss")
    loaded = load_index(path, config)
    assert type(loaded) is type(index) and loaded.n_items == N_ITEMS and loaded.dim == DIM
    np.testing.assert_array_equal(loaded.vectors, items)
    exclude = [np.arange(r, r + 20) for r in range(len(queries))]
    for args in ((), (exclude,), (exclude, np.arange(N_ITEMS) % 3 > 0)):
        expected, got = index.search(queries, 10, *args), loaded.search(queries, 10, *args)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temp files left


def test_load_or_build_reuses_and_replaces_the_saved_index(
    items: np.ndarray, queries: np.ndarray, tmp_path: Path
) -> None:
    config = ANN["hnsw"]
    first = load_or_build_index(tmp_path, items, config)
    (saved,) = tmp_path.glob("item-index-hnsw-*.faiss")
    stamp = saved.stat().st_mtime_ns
    again = load_or_build_index(tmp_path, items, config)
    assert saved.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    np.testing.assert_array_equal(again.search(queries, 10)[1], first.search(queries, 10)[1])
    # other vectors (a retrained model): a new index replaces the old file
    load_or_build_index(tmp_path, items * 2, config)
    (replaced,) = tmp_path.glob("item-index-hnsw-*.faiss")
    assert replaced != saved
    # an exact index is never written
    assert isinstance(load_or_build_index(tmp_path, items, {"kind": "exact"}), ExactIndex)
    assert len(list(tmp_path.iterdir())) == 1


def test_an_index_that_cannot_be_saved_is_still_served(
    items: np.ndarray, queries: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "model"
    blocked.write_text("a file where the model directory should be")
    index = load_or_build_index(blocked, items, ANN["ivf"])
    assert isinstance(index, IVFIndex) and index.search(queries, 5)[1].shape == (200, 5)
    assert "item index not saved" in caplog.text


def test_auto_kind_switches_to_hnsw_above_the_threshold(items: np.ndarray) -> None:
    assert isinstance(build_index(items, {"ann_threshold": N_ITEMS}), ExactIndex)
    assert isinstance(build_index(items, {"ann_threshold": N_ITEMS - 1}), HNSWIndex)
    assert isinstance(build_index(items, {"kind": "ivf"}), IVFIndex)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"kind": "annoy"}, "kind"),
        ({"hnsw_m": 1}, "hnsw_m"),
        ({"ef_search": 0}, "ef_search"),
        ({"nprobe": -2}, "nprobe"),
        ({"nlist": 0}, "nlist"),
        ({"ann_threshold": "many"}, "ann_threshold"),
        ({"efSearch": 10}, "efSearch"),
    ],
)
def test_bad_config_values_raise_config_error(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid retrieval config: {field}: "):
        retrieval_config(values)
    with pytest.raises(ConfigError, match=field):
        build_index(np.ones((10, 4), np.float32), values)


def test_bad_search_input_raises_evorec_errors(items: np.ndarray) -> None:
    index = build_index(items, {"kind": "exact"})
    with pytest.raises(EvorecError, match=r"queries must be a \[n, 16\] matrix"):
        index.search(np.ones((2, 8), np.float32), 5)
    with pytest.raises(EvorecError, match="queries: row 1 is not finite"):
        index.search(np.array([[0.0] * DIM, [np.nan] * DIM]), 5)
    with pytest.raises(EvorecError, match="k must be a positive integer"):
        index.search(items[:1], 0)
    with pytest.raises(EvorecError, match="exclude has 2 rows for 1 queries"):
        index.search(items[:1], 5, exclude=[[1], [2]])
    with pytest.raises(UnknownIdError, match=r"exclude\[0\]: item index 3000 is outside"):
        index.search(items[:1], 5, exclude=[[1, N_ITEMS]])
    with pytest.raises(EvorecError, match="allowed must be a boolean mask"):
        index.search(items[:1], 5, allowed=np.ones(10, bool))
    with pytest.raises(EvorecError, match="item vectors: no items to index"):
        build_index(np.zeros((0, 4), np.float32))
    with pytest.raises(EvorecError, match="nlist=500 exceeds the 100 items"):
        build_index(items[:100], {"kind": "ivf", "nlist": 500})


def test_unreadable_or_mismatched_index_files(items: np.ndarray, tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="item index not found"):
        load_index(tmp_path / "missing.faiss")
    broken = tmp_path / "broken.faiss"
    broken.write_bytes(b"not an index")
    with pytest.raises(ModelDirError, match=r"broken.faiss: cannot read item index"):
        load_index(broken)
    path = build_index(items, {"kind": "exact"}).save(tmp_path / "exact.faiss")
    with pytest.raises(ModelDirError, match="index kind is exact, the config asks for hnsw"):
        load_index(path, {"kind": "hnsw"})


def test_recommend_through_an_index_matches_full_scoring() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items = 60, 400
    users = np.repeat(np.arange(n_users), 12)
    frame = pl.DataFrame(
        {
            "user_id": users,
            "item_id": rng.integers(0, n_items, len(users)),
            "timestamp": np.tile(np.arange(12), n_users),
        }
    )
    dataset = from_frame(frame, preprocess_config={"min_user_events": 1, "min_item_events": 1})
    model = SASRec(epochs=1, dim=16, max_len=10, batch_size=32, device="cpu").fit(dataset)
    known = dataset.item_ids.to_list()
    wanted = known[::3]
    for config in ({"kind": "exact"}, {"kind": "hnsw", "exact_max_allowed": 0}):
        index = build_index(model.item_vectors(), config)
        for options in ({}, {"items": wanted}, {"filter_seen": False}):
            expected = model.recommend(users=range(20), k=15, **options)
            got = model.recommend(users=range(20), k=15, index=index, **options)
            assert got.select("user_id", "item_id").equals(expected.select("user_id", "item_id"))
            np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5)
        # an empty history ranks by popularity (ties in any order), as without an index
        expected = model.recommend(histories=[[], known[:3]], k=5, items=wanted)
        got = model.recommend(histories=[[], known[:3]], k=5, items=wanted, index=index)
        assert got["score"].to_list() == pytest.approx(expected["score"].to_list(), rel=1e-5)
        assert set(got["item_id"]) <= set(wanted)
    with pytest.raises(EvorecError, match="the index holds 10 items, the sasrec model"):
        model.recommend(users=[0], index=build_index(np.ones((10, 16), np.float32)))
