"""Preprocessing: cleaning, k-core, id mapping, ordering, side tables, save/load, cache."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evorec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from evorec.data.preprocess import PreprocessConfig, drop_exact_duplicates, preprocess
from evorec.data.schema import RawData, canonical_events
from evorec.errors import DataError, UnknownIdError

LOOSE = PreprocessConfig(min_user_events=1, min_item_events=1)


def raw_of(rows: dict, **kwargs) -> RawData:
    return RawData(canonical_events(pl.DataFrame(rows, strict=False)), **kwargs)


def step(dataset: Dataset, name: str) -> dict:
    return next(s for s in dataset.meta["report"] if s["step"] == name)


def original_events(dataset: Dataset) -> list[tuple]:
    """(original user, original item, timestamp) of every event, in dataset order."""
    ev = dataset.events
    users = dataset.user_ids.gather(ev[USER_IDX]).to_list()
    items = dataset.item_ids.gather(ev[ITEM_IDX]).to_list()
    return list(zip(users, items, ev["timestamp"].to_list(), strict=True))


# -- cleaning ---------------------------------------------------------------------------


def test_exact_duplicates_removed():
    raw = raw_of(
        {
            "user_id": [1, 1, 1, 1, 2],
            "item_id": [10, 10, 10, 11, 10],
            "timestamp": [5, 5, 6, 5, 5],
            "behavior": ["pv", "pv", "pv", "pv", "pv"],
            "value": [1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    ds = preprocess(raw, LOOSE)
    # only row 2 is an exact copy (same user, item, time, behaviour, value) of row 1
    assert ds.n_events == 4
    assert Counter(original_events(ds)) == Counter([(1, 10, 5), (1, 10, 6), (1, 11, 5), (2, 10, 5)])
    s = step(ds, "drop exact duplicates")
    assert (s["before"], s["after"], s["removed"]) == (5, 4, 1)

    keep = preprocess(
        raw, PreprocessConfig(min_user_events=1, min_item_events=1, drop_duplicates=False)
    )
    assert keep.n_events == 5


def test_duplicates_differing_in_behavior_or_value_are_kept():
    raw = raw_of(
        {
            "user_id": [1, 1, 1, 1],
            "item_id": [10, 10, 10, 10],
            "timestamp": [5, 5, 5, 5],
            "behavior": ["pv", "buy", "pv", None],
            "value": [1.0, 1.0, 2.0, None],
        }
    )
    assert preprocess(raw, LOOSE).n_events == 4


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 2),
            st.sampled_from(["pv", "buy", None]),
            st.sampled_from([1.0, 2.0, None]),
        ),
        min_size=1,
        max_size=60,
    )
)
@settings(max_examples=60, deadline=None)
def test_duplicates_dropped_as_an_exact_first_keeping_unique(rows):
    columns = ["user_id", "item_id", "timestamp", "behavior", "value"]
    events = canonical_events(pl.DataFrame(rows, schema=columns, orient="row"))
    expected = events.unique(subset=columns, keep="first", maintain_order=True)
    assert drop_exact_duplicates(events).equals(expected)


def test_missing_and_unparseable_rows_dropped_with_lines():
    raw = raw_of(
        {
            "user_id": ["a", None, "a", "b", "c", "b"],
            "item_id": ["x", "y", None, "y", "x", "x"],
            "timestamp": ["1", "2", "3", "oops", "5", "6"],  # "oops" casts to null
            "line": [2, 3, 4, 5, 6, 7],
        }
    )
    ds = preprocess(raw, LOOSE)
    assert Counter(original_events(ds)) == Counter([("a", "x", 1), ("c", "x", 5), ("b", "x", 6)])
    s = step(ds, "drop missing/unparseable")
    assert (s["before"], s["after"]) == (6, 3)
    assert s["detail"] == "lines 3, 4, 5"


def test_many_bad_lines_are_truncated_in_report():
    n = 9
    raw = raw_of(
        {
            "user_id": [None] * n + [1],
            "item_id": [1] * (n + 1),
            "timestamp": list(range(n + 1)),
        }
    )
    s = step(preprocess(raw, LOOSE), "drop missing/unparseable")
    assert s["removed"] == n
    assert s["detail"] == "lines 1, 2, 3, 4, 5 ..."


def test_bad_rows_from_a_csv_file_report_file_lines(tmp_path):
    readers = pytest.importorskip("evorec.data.formats")
    f = tmp_path / "ev.csv"
    f.write_text(
        "user,item,timestamp\n"
        "1,10,100\n"
        "1,11,notatime\n"  # line 3
        "2,10,101\n"
        ",12,102\n"  # line 5: no user
        "2,11,103\n"
    )
    ds = preprocess(readers.read_events(f), LOOSE)
    assert step(ds, "drop missing/unparseable")["detail"] == "lines 3, 5"
    assert ds.n_events == 3


def test_rating_threshold():
    raw = raw_of(
        {
            "user_id": [1, 1, 1, 2, 2],
            "item_id": [1, 2, 3, 1, 2],
            "timestamp": [1, 2, 3, 4, 5],
            "value": [4.0, 3.5, 3.4, None, 5.0],
        }
    )
    cfg = PreprocessConfig(min_user_events=1, min_item_events=1, min_rating=3.5)
    ds = preprocess(raw, cfg)
    assert Counter(original_events(ds)) == Counter([(1, 1, 1), (1, 2, 2), (2, 2, 5)])
    assert sorted(ds.events["value"].to_list()) == [3.5, 4.0, 5.0]
    # a threshold that no event passes leaves nothing for k-core: a clear error
    with pytest.raises(DataError, match="no events left"):
        preprocess(raw, cfg.model_copy(update={"min_rating": 9.0}))


def test_max_user_events_drops_heavy_users():
    raw = raw_of(
        {"user_id": [1, 1, 1, 2, 2], "item_id": [1, 2, 3, 1, 2], "timestamp": [1, 2, 3, 4, 5]}
    )
    cfg = PreprocessConfig(min_user_events=1, min_item_events=1, max_user_events=2)
    ds = preprocess(raw, cfg)
    assert ds.user_ids.to_list() == [2]
    assert ds.n_events == 2


# -- k-core -----------------------------------------------------------------------------


def brute_force_k_core(events: list[tuple], min_user: int, min_item: int) -> list[tuple]:
    """Remove any user / item under its threshold, one at a time, until none is."""
    events = list(events)
    while True:
        users = Counter(e[0] for e in events)
        items = Counter(e[1] for e in events)
        bad_user = next((u for u, c in users.items() if c < min_user), None)
        bad_item = next((i for i, c in items.items() if c < min_item), None)
        if bad_user is None and bad_item is None:
            return events
        if bad_user is not None:
            events = [e for e in events if e[0] != bad_user]
        else:
            events = [e for e in events if e[1] != bad_item]


# ids as given, as strings, or as integers too spread out to count by value
ID_KINDS = {"compact": lambda i: i, "text": lambda i: f"id-{i}", "spread": lambda i: i * 10**12}


@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 10)), min_size=1, max_size=80),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from(sorted(ID_KINDS)),
)
@settings(max_examples=60, deadline=None)
def test_k_core_matches_brute_force(pairs, min_user, min_item, id_kind):
    as_id = ID_KINDS[id_kind]
    # distinct times: no duplicates
    events = [(as_id(u), as_id(i), t) for t, (u, i) in enumerate(pairs)]
    expected = brute_force_k_core(events, min_user, min_item)
    raw = raw_of(
        {
            "user_id": [e[0] for e in events],
            "item_id": [e[1] for e in events],
            "timestamp": [e[2] for e in events],
        }
    )
    cfg = PreprocessConfig(min_user_events=min_user, min_item_events=min_item)
    if not expected:
        with pytest.raises(DataError):
            preprocess(raw, cfg)
        return
    ds = preprocess(raw, cfg)
    assert Counter(original_events(ds)) == Counter(expected)
    # fixed point: every user and item left meets its threshold
    assert ds.histories.lengths.min() >= min_user
    assert ds.item_popularity.min() >= min_item


def test_k_core_needs_several_rounds():
    # item 3 has one event -> user 2 drops to 1 event -> item 2 drops to 1 event -> user 1 ...
    raw = raw_of(
        {
            "user_id": [0, 0, 1, 1, 2, 2, 9, 9],
            "item_id": [0, 1, 1, 2, 2, 3, 0, 1],
            "timestamp": [1, 2, 3, 4, 5, 6, 7, 8],
        }
    )
    ds = preprocess(raw, PreprocessConfig(min_user_events=2, min_item_events=2))
    assert Counter(original_events(ds)) == Counter([(0, 0, 1), (0, 1, 2), (9, 0, 7), (9, 1, 8)])
    s = step(ds, "k-core")
    assert s["removed"] == 4
    assert "rounds" in s["detail"]
    rounds = int(s["detail"].split(", ")[-1].split()[0])
    assert rounds >= 3


# -- ids and order ----------------------------------------------------------------------


def random_raw(seed: int, n: int = 60) -> tuple[RawData, list[tuple]]:
    rng = np.random.default_rng(seed)
    users = [f"u{v}" for v in rng.integers(0, 8, n)]
    items = rng.integers(100, 115, n).tolist()
    times = rng.integers(0, 20, n).tolist()
    raw = raw_of({"user_id": users, "item_id": items, "timestamp": times})
    return raw, list(zip(users, items, times, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_contiguous_ids_and_original_ids_round_trip(seed):
    raw, events = random_raw(seed)
    ds = preprocess(
        raw, PreprocessConfig(min_user_events=1, min_item_events=1, drop_duplicates=False)
    )
    assert ds.n_users == len({e[0] for e in events})
    assert ds.n_items == len({e[1] for e in events})
    assert sorted(set(ds.events[USER_IDX].to_list())) == list(range(ds.n_users))
    assert sorted(set(ds.events[ITEM_IDX].to_list())) == list(range(ds.n_items))
    assert ds.events[USER_IDX].dtype == pl.Int64 and ds.events[ITEM_IDX].dtype == pl.Int64
    assert ds.user_ids.n_unique() == ds.n_users and ds.item_ids.n_unique() == ds.n_items
    assert Counter(original_events(ds)) == Counter(events)
    # encode_* inverts user_ids / item_ids, in the order asked
    users = ds.user_ids.to_list()[::-1]
    assert ds.encode_users(users).tolist() == list(range(ds.n_users))[::-1]
    items = ds.item_ids.to_list()
    assert ds.encode_items(items + items[:2]).tolist() == list(range(ds.n_items)) + [0, 1]


def test_unknown_ids_raise():
    raw, _ = random_raw(0)
    ds = preprocess(raw, LOOSE)
    with pytest.raises(UnknownIdError, match="nobody"):
        ds.encode_users(["u1", "nobody"])
    with pytest.raises(UnknownIdError, match="999"):
        ds.encode_items([999])
    with pytest.raises(UnknownIdError):
        ds.encode_items(["not-an-int"])  # wrong type for integer item ids
    # ids of mixed types: only the misfit is reported, not a TypeError
    with pytest.raises(UnknownIdError, match=r"item id\(s\): oops$"):
        ds.encode_items([100, "oops", 101])
    with pytest.raises(UnknownIdError, match=r"user id\(s\): 7$"):
        ds.encode_users(["u1", 7])
    assert ds.encode_items(["100", 101]).tolist() == ds.encode_items([100, 101]).tolist()


def test_ids_numbered_in_order_of_first_appearance():
    raw = raw_of(
        {
            "user_id": ["b", "a", "b", "c"],
            "item_id": [30, 20, 10, 30],
            "timestamp": [9, 1, 3, 2],
        }
    )
    ds = preprocess(raw, LOOSE)
    assert ds.user_ids.to_list() == ["b", "a", "c"]
    assert ds.item_ids.to_list() == [30, 20, 10]


def test_events_sorted_by_user_then_time_ties_keep_line_order():
    raw = raw_of(
        {
            "user_id": [1, 1, 1, 1, 2],
            "item_id": [10, 11, 12, 13, 10],
            "timestamp": [5, 5, 1, 5, 3],
            "line": [7, 3, 9, 5, 1],
        }
    )
    ds = preprocess(raw, LOOSE)
    u1 = int(ds.encode_users([1])[0])
    hist = ds.histories
    # time 1 first; the three events at time 5 in line order 3, 5, 7
    assert ds.item_ids.gather(hist[u1]).to_list() == [12, 11, 13, 10]
    assert hist.timestamps[hist.offsets[u1] : hist.offsets[u1 + 1]].tolist() == [1, 5, 5, 5]
    # events are grouped by user index, chronologically
    ev = ds.events
    key = list(zip(ev[USER_IDX].to_list(), ev["timestamp"].to_list(), strict=True))
    assert key == sorted(key)


def test_behavior_codes():
    raw = raw_of(
        {
            "user_id": [1, 1, 1, 2],
            "item_id": [1, 2, 3, 1],
            "timestamp": [1, 2, 3, 4],
            "behavior": ["pv", "buy", None, "cart"],
        }
    )
    ds = preprocess(raw, LOOSE)
    assert ds.behaviors == ["buy", "cart", "pv"]
    codes = ds.events["behavior"].to_list()
    names = [None if c is None else ds.behaviors[c] for c in codes]
    got = Counter(zip(original_events(ds), names, strict=True))
    assert got == Counter(
        [((1, 1, 1), "pv"), ((1, 2, 2), "buy"), ((1, 3, 3), None), ((2, 1, 4), "cart")]
    )
    assert ds.histories.behaviors is not None
    assert sorted(ds.histories.behaviors.tolist()) == [-1, 0, 1, 2]


def test_no_behaviors_means_no_behavior_array():
    raw = raw_of({"user_id": [1], "item_id": [1], "timestamp": [1]})
    ds = preprocess(raw, LOOSE)
    assert ds.behaviors == []
    assert ds.histories.behaviors is None


def test_side_tables_aligned_to_internal_ids():
    raw = raw_of(
        {"user_id": [1, 1, 2, 3], "item_id": [30, 10, 20, 40], "timestamp": [1, 2, 3, 4]},
    )
    raw.items = pl.DataFrame(
        {
            "item_id": ["10", "99", "30", "20", "10"],  # strings; 99 unused; 10 twice
            "title": ["ten", "ninety-nine", "thirty", "twenty", "ten again"],
        }
    )
    raw.users = pl.DataFrame({"user_id": [3, 2, 1, 7], "age": [33, 22, 11, 77]})
    ds = preprocess(raw, PreprocessConfig(min_user_events=1, min_item_events=1))
    items = ds.items
    assert items is not None and items.height == ds.n_items
    assert items[ITEM_IDX].to_list() == list(range(ds.n_items))
    assert items["item_id"].to_list() == ds.item_ids.to_list()
    titles = dict(zip(items["item_id"].to_list(), items["title"].to_list(), strict=True))
    assert titles == {30: "thirty", 10: "ten", 20: "twenty", 40: None}
    users = ds.users
    assert users is not None
    assert users[USER_IDX].to_list() == list(range(ds.n_users))
    assert users["age"].to_list() == [11 * u for u in ds.user_ids.to_list()]


# -- persistence ------------------------------------------------------------------------


def test_dataset_save_load_round_trip(tmp_path):
    raw = raw_of(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": [1, 2, 1, 3],
            "timestamp": [1, 2, 3, 4],
            "behavior": ["pv", "buy", "pv", None],
            "value": [1.0, None, 2.0, 3.0],
        },
        name="tiny",
        has_time=False,
    )
    raw.items = pl.DataFrame({"item_id": [1, 2, 3], "title": ["x", "y", "z"]})
    ds = preprocess(raw, LOOSE)
    ds.save(tmp_path / "ds")
    ds.save(tmp_path / "ds")  # overwriting an existing directory works
    back = Dataset.load(tmp_path / "ds")
    assert back.events.equals(ds.events)
    assert back.events.schema == ds.events.schema
    assert back.user_ids.to_list() == ds.user_ids.to_list()
    assert back.item_ids.to_list() == ds.item_ids.to_list()
    assert back.items is not None and back.items.equals(ds.items)
    assert back.users is None
    assert back.behaviors == ds.behaviors
    assert (back.has_time, back.name) == (False, "tiny")
    assert back.meta == ds.meta
    assert back.histories.to_lists() == ds.histories.to_lists()
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dir left behind


def test_dataset_load_rejects_incomplete_or_foreign(tmp_path):
    raw, _ = random_raw(0)
    ds = preprocess(raw, LOOSE)
    ds.save(tmp_path / "ds")
    (tmp_path / "ds" / "item_ids.parquet").unlink()
    with pytest.raises(DataError, match="item_ids.parquet"):
        Dataset.load(tmp_path / "ds")
    ds.save(tmp_path / "ds2")
    meta = tmp_path / "ds2" / "dataset.json"
    meta.write_text(meta.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(DataError, match="format 99"):
        Dataset.load(tmp_path / "ds2")


# -- load_dataset cache -----------------------------------------------------------------

CSV = "user,item,timestamp\n1,10,100\n1,11,101\n2,10,102\n2,12,103\n3,11,104\n"


def test_load_dataset_cache(tmp_path):
    load = pytest.importorskip("evorec.data.load")
    f = tmp_path / "events.csv"
    f.write_text(CSV)
    cache = tmp_path / "cache"
    opts = {"min_user_events": 1, "min_item_events": 1}

    first = load.load_dataset(f, preprocess_config=opts, cache_dir=cache)
    assert first.meta["cache"]["hit"] is False
    assert first.n_events == 5

    second = load.load_dataset(f, preprocess_config=opts, cache_dir=cache)
    assert second.meta["cache"]["hit"] is True
    assert second.meta["cache"]["path"] == first.meta["cache"]["path"]
    assert second.events.equals(first.events)
    assert second.user_ids.to_list() == first.user_ids.to_list()
    assert second.item_ids.to_list() == first.item_ids.to_list()

    other_opts = load.load_dataset(
        f, preprocess_config={**opts, "min_item_events": 2}, cache_dir=cache
    )
    assert other_opts.meta["cache"]["hit"] is False
    assert other_opts.n_events == 4  # item 12 dropped

    f.write_text(CSV + "4,12,105\n")
    changed = load.load_dataset(f, preprocess_config=opts, cache_dir=cache)
    assert changed.meta["cache"]["hit"] is False
    assert changed.n_events == 6
    again = load.load_dataset(f, preprocess_config=opts, cache_dir=cache)
    assert again.meta["cache"]["hit"] is True and again.n_events == 6

    uncached = load.load_dataset(f, preprocess_config=opts, cache=False)
    assert "cache" not in uncached.meta
    assert uncached.events.equals(again.events)


def test_load_dataset_recovers_from_corrupt_cache(tmp_path):
    load = pytest.importorskip("evorec.data.load")
    f = tmp_path / "events.csv"
    f.write_text(CSV)
    opts = {"min_user_events": 1, "min_item_events": 1}
    first = load.load_dataset(f, preprocess_config=opts, cache_dir=tmp_path / "c")
    (Path(first.meta["cache"]["path"]) / "events.parquet").write_bytes(b"garbage")
    second = load.load_dataset(f, preprocess_config=opts, cache_dir=tmp_path / "c")
    assert second.meta["cache"]["hit"] is False
    assert second.events.equals(first.events)
