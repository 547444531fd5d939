"""Leave-one-out and temporal splits against per-user brute-force references; every protocol
through its ``data.split.method`` name, next-purchase through ``evorec train``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import Result
from pydantic import ValidationError

from evorec.config import SplitConfig
from evorec.data.dataset import Dataset
from evorec.data.load import load_dataset
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.schema import RawData, canonical_events
from evorec.data.split import (
    EvalSet,
    cold_item_split,
    leave_one_out,
    make_split,
    next_purchase_split,
    split_methods,
    temporal_split,
)
from evorec.errors import ConfigError, DataError
from evorec.evaluation.evaluator import evaluate
from evorec.models import MostPopular

LOOSE = PreprocessConfig(min_user_events=1, min_item_events=1, drop_duplicates=False)


def make_dataset(seed: int, n_users: int = 25, n_items: int = 15) -> Dataset:
    """Users with 1..9 events at random (possibly tied) times."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(1, 10))
        users += [u] * n
        items += rng.integers(0, n_items, n).tolist()
        times += rng.integers(0, 100, n).tolist()
    raw = RawData(
        canonical_events(pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times}))
    )
    return preprocess(raw, LOOSE)


def per_user(ds: Dataset) -> dict[int, list[tuple[int, int]]]:
    """Internal user -> chronological (item, time) list, straight from the events table."""
    out: dict[int, list[tuple[int, int]]] = {u: [] for u in range(ds.n_users)}
    for u, i, t in ds.events.select("user_idx", "item_idx", "timestamp").iter_rows():
        out[u].append((i, t))
    for s in out.values():
        assert [t for _, t in s] == sorted(t for _, t in s)
    return out


def rows_of(es: EvalSet) -> dict[int, tuple[list[int], list[int]]]:
    h, t = es.histories.to_lists(), es.targets.to_lists()
    assert len(h) == len(t) == len(es.users)
    return {int(u): (h[r], t[r]) for r, u in enumerate(es.users)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out(seed):
    ds = make_dataset(seed)
    split = leave_one_out(ds)
    seqs = per_user(ds)
    eligible = sorted(u for u, s in seqs.items() if len(s) >= 3)
    assert split.test.users.tolist() == eligible
    assert split.valid.users.tolist() == eligible
    assert split.protocol["eval_users"] == len(eligible)

    test, valid = rows_of(split.test), rows_of(split.valid)
    for u in eligible:
        items = [i for i, _ in seqs[u]]
        assert test[u] == (items[:-1], [items[-1]])
        assert valid[u] == (items[:-2], [items[-2]])

    train = per_user(split.train)
    for u, s in seqs.items():
        # the last two events of eligible users are held out; shorter users stay whole
        assert train[u] == (s[:-2] if len(s) >= 3 else s)
    assert split.train.n_events == sum(len(s) - 2 if len(s) >= 3 else len(s) for s in seqs.values())

    # one id space for everything
    assert split.full is ds
    assert split.train.n_users == ds.n_users and split.train.n_items == ds.n_items
    assert split.train.user_ids.equals(ds.user_ids)
    assert split.train.item_ids.equals(ds.item_ids)


def test_leave_one_out_hand_case():
    raw = RawData(
        canonical_events(
            pl.DataFrame(
                {
                    "user_id": ["a"] * 4 + ["b"] * 2 + ["c"] * 3,
                    "item_id": [1, 2, 3, 4, 1, 2, 5, 6, 7],
                    # c's events are in reverse file order
                    "timestamp": [1, 2, 3, 4, 1, 2, 3, 2, 1],
                }
            )
        )
    )
    split = leave_one_out(preprocess(raw, LOOSE))
    ds = split.full
    orig = ds.item_ids.to_list()

    def ids(seq):
        return [orig[i] for i in seq]

    users = ds.user_ids.gather(split.test.users).to_list()
    assert users == ["a", "c"]
    assert [ids(s) for s in split.test.targets.to_lists()] == [[4], [5]]
    assert [ids(s) for s in split.valid.targets.to_lists()] == [[3], [6]]
    assert [ids(s) for s in split.test.histories.to_lists()] == [[1, 2, 3], [7, 6]]
    assert [ids(s) for s in split.valid.histories.to_lists()] == [[1, 2], [7]]
    assert [ids(s) for s in split.train.histories.to_lists()] == [[1, 2], [1, 2], [7]]


def test_leave_one_out_needs_long_users():
    raw = RawData(
        canonical_events(
            pl.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 1], "timestamp": [1, 2, 3]})
        )
    )
    with pytest.raises(DataError):
        leave_one_out(preprocess(raw, LOOSE))


@pytest.mark.parametrize(("seed", "t_valid", "t_test"), [(0, 50, 75), (1, 30, 31), (2, 10, 90)])
def test_temporal_split(seed, t_valid, t_test):
    ds = make_dataset(seed)
    split = temporal_split(ds, valid_time=t_valid, test_time=t_test)
    assert split.protocol["valid_time"] == t_valid and split.protocol["test_time"] == t_test
    seqs = per_user(ds)

    def reference(start, stop):
        out = {}
        for u, s in seqs.items():
            before = [i for i, t in s if t < start]
            window = [i for i, t in s if t >= start and (stop is None or t < stop)]
            if before and window:
                out[u] = (before, window)
        return out

    assert rows_of(split.valid) == reference(t_valid, t_test)
    assert rows_of(split.test) == reference(t_test, None)
    assert split.valid.users.tolist() == sorted(reference(t_valid, t_test))

    # histories strictly before the cut, targets inside the window
    for es, lo, hi in ((split.valid, t_valid, t_test), (split.test, t_test, None)):
        assert es.histories.timestamps.max() < lo
        assert es.targets.timestamps.min() >= lo
        if hi is not None:
            assert es.targets.timestamps.max() < hi

    train = split.train
    assert train.events["timestamp"].max() < t_valid
    assert train.n_events == sum(1 for s in seqs.values() for _, t in s if t < t_valid)
    assert train.user_ids.equals(ds.user_ids) and train.item_ids.equals(ds.item_ids)


def test_temporal_split_quantile_cuts():
    ds = make_dataset(3)
    split = temporal_split(ds, valid_quantile=0.5, test_quantile=0.8)
    times = ds.events["timestamp"]
    assert split.protocol["valid_time"] == int(times.quantile(0.5))
    assert split.protocol["test_time"] == int(times.quantile(0.8))
    assert split.protocol["valid_time"] < split.protocol["test_time"]


def test_temporal_split_rejects_bad_cuts():
    ds = make_dataset(0)
    with pytest.raises(DataError):
        temporal_split(ds, valid_time=60, test_time=60)
    with pytest.raises(DataError):
        temporal_split(ds, valid_time=10, test_time=10_000)  # nobody after the test cut


def test_eval_set_subset():
    ds = make_dataset(4)
    test = leave_one_out(ds).test
    rows = np.array([2, 0])
    sub = test.subset(rows)
    assert sub.users.tolist() == test.users[rows].tolist()
    h, t = test.histories.to_lists(), test.targets.to_lists()
    assert sub.histories.to_lists() == [h[2], h[0]]
    assert sub.targets.to_lists() == [t[2], t[0]]


def events_dataset(items: list[int]) -> Dataset:
    """Two users with three events each, at times 1, 2, 3."""
    frame = pl.DataFrame(
        {"user_id": [0, 0, 0, 1, 1, 1], "item_id": items, "timestamp": [1, 2, 3] * 2}
    )
    return preprocess(RawData(canonical_events(frame)), LOOSE)


@pytest.mark.parametrize(
    ("items", "repeats"), [([1, 2, 3, 1, 2, 3], False), ([1, 2, 1, 1, 2, 3], True)]
)
def test_seen_items_are_filtered_unless_users_repeat_items(items, repeats):
    ds = events_dataset(items)
    assert ds.has_repeats is repeats
    loo, temporal = leave_one_out(ds), temporal_split(ds, valid_time=2, test_time=3)
    assert loo.valid.filter_seen is loo.test.filter_seen is (not repeats)
    assert loo.protocol["filter_seen"] is (not repeats)
    assert temporal.test.filter_seen is temporal.valid.filter_seen is (not repeats)
    assert loo.test.subset(np.array([0])).filter_seen is (not repeats)


# --------------------------------------------------------------------------- the protocol registry


def test_every_protocol_is_reached_by_its_method_name() -> None:
    assert split_methods() == ["cold-items", "leave-one-out", "next-purchase", "temporal"]
    ds = make_dataset(3, n_users=40)
    by_config = make_split(ds, SplitConfig())
    direct = leave_one_out(ds)
    assert by_config.protocol == direct.protocol
    assert rows_of(by_config.test) == rows_of(direct.test)
    temporal = make_split(ds, SplitConfig(method="temporal", test_quantile=0.9, valid_quantile=0.6))
    assert temporal.protocol == temporal_split(ds, valid_quantile=0.6).protocol
    cold = make_split(ds, SplitConfig(method="cold-items", cold_fraction=0.3, cold_seed=1))
    assert rows_of(cold.test) == rows_of(cold_item_split(ds, 0.3, 1).test)
    with pytest.raises(ValidationError, match="next-purchase"):
        SplitConfig(method="random")
    with pytest.raises(DataError, match="no 'buy' events"):
        make_split(ds, SplitConfig(method="next-purchase"))
    with pytest.raises(ConfigError, match="temporal split needs timestamps"):
        make_split(ds.replace(has_time=False), SplitConfig(method="temporal"))


def _shop_log(path: Path) -> Path:
    """Views and purchases of 30 users over 12 items, one event a second."""
    rng = np.random.default_rng(0)
    rows = ["user,item,behavior,timestamp"]
    for user in range(30):
        for step in range(int(rng.integers(4, 9))):
            item = int(rng.integers(0, 12))
            behavior = "buy" if step % 3 == 2 else "pv"
            rows.append(f"u{user},i{item},{behavior},{1000 * user + step}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_next_purchase_trains_and_evaluates_through_evorec_train(
    tmp_path: Path, run: Callable[..., Result]
) -> None:
    log, out = _shop_log(tmp_path / "shop.csv"), tmp_path / "model"
    sets = ["data.split.method=next-purchase", "data.preprocess.min_user_events=1"]
    sets += ["data.preprocess.min_item_events=1", "evaluation.filter_seen=false"]
    args = ["train", "--data", log, "--model", "popular", "--out", out, "--no-refit"]
    result = run(*args, *(f"--set={s}" for s in sets))
    assert result.code == 0, result.err
    manifest = json.loads((out / "evorec-model.json").read_text())
    assert manifest["protocol"]["split"] == "next purchase"
    preprocess_config = PreprocessConfig(min_user_events=1, min_item_events=1)
    split = next_purchase_split(load_dataset(log, preprocess_config=preprocess_config))
    assert manifest["test"]["users"] == len(split.test) > 0
    expected = evaluate(MostPopular().fit(split), split.test, filter_seen=False)
    assert manifest["test"]["HR@10"] == pytest.approx(expected.metrics["HR@10"])
    again = run("evaluate", "--model-dir", out, "--json", tmp_path / "again.json")
    assert again.code == 0, again.err
    assert json.loads((tmp_path / "again.json").read_text()) == manifest["test"]
