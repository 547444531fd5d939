"""Simulator: determinism, shapes, real drift, learnable signal, saving and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from evorec.cli.data_commands import app
from evorec.data.formats import read_events
from evorec.data.schema import EVENT_COLUMNS
from evorec.data.simulate import SimulatedData, simulate
from evorec.errors import ConfigError


@pytest.fixture(scope="module")
def data() -> SimulatedData:
    return simulate(n_users=400, n_items=300, n_topics=8, seed=3)


def test_deterministic_by_seed() -> None:
    a = simulate(n_users=50, n_items=100, n_topics=5, seed=7)
    b = simulate(n_users=50, n_items=100, n_topics=5, seed=7)
    assert_frame_equal(a.raw.events, b.raw.events)
    assert_frame_equal(a.truth, b.truth)
    assert a.raw.items is not None and b.raw.items is not None
    assert_frame_equal(a.raw.items, b.raw.items)
    c = simulate(n_users=50, n_items=100, n_topics=5, seed=8)
    assert not a.raw.events.equals(c.raw.events)


def test_shapes_and_types(data: SimulatedData) -> None:
    events, items, truth = data.raw.events, data.raw.items, data.truth
    assert events.columns == list(EVENT_COLUMNS)
    assert data.raw.has_time
    assert events["user_id"].n_unique() == 400
    lengths = events.group_by("user_id").len()["len"]
    assert lengths.min() >= 20 and lengths.max() <= 60
    assert items is not None and items.columns == ["item_id", "topic", "popularity"]
    assert items.height == 300 and set(items["topic"]) == set(range(8))
    assert events["item_id"].is_between(1, 300).all()
    assert items.group_by("topic").agg(pl.col("popularity").sum())["popularity"].to_numpy() == (
        pytest.approx(1.0)
    )
    assert truth.height == events.height
    assert truth.columns == ["user_id", "step", "timestamp", "topic", "mixture"]
    assert (truth["user_id"] == events["user_id"]).all()


def test_timestamps_increase_and_look_real(data: SimulatedData) -> None:
    events = data.raw.events
    steps = events.select(pl.col("timestamp").diff().over("user_id").alias("gap"))["gap"]
    assert steps.drop_nulls().min() >= 1
    assert events["timestamp"].min() >= 1_672_531_200  # 2023-01-01
    assert events["timestamp"].max() < 1_735_689_600  # 2025-01-01


def test_behaviours_and_repeats(data: SimulatedData) -> None:
    events = data.raw.events
    share = events["behavior"].value_counts(normalize=True)
    rates = dict(share.iter_rows())
    assert set(rates) == {"pv", "cart", "buy"}
    assert rates["pv"] > 0.8 and rates["cart"] > rates["buy"] > 0.01
    repeats = events.height - events.select(pl.struct("user_id", "item_id").n_unique()).item()
    assert repeats / events.height < 0.06


def test_mixtures_are_distributions(data: SimulatedData) -> None:
    mixtures = np.vstack(data.truth["mixture"].to_list())
    assert mixtures.shape == (data.truth.height, 8)
    assert (mixtures >= 0).all()
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-9)


def test_interests_drift(data: SimulatedData) -> None:
    dominant = data.truth.with_columns(d=pl.col("mixture").list.arg_max())
    changed = dominant.group_by("user_id").agg(pl.col("d").n_unique() > 1)["d"]
    assert changed.mean() > 0.8


def test_recent_items_predict_the_next_topic_better_than_history(data: SimulatedData) -> None:
    topics = data.raw.events.join(data.raw.items, on="item_id", how="left")
    per_user = topics.group_by("user_id", maintain_order=True).agg("topic")["topic"]
    recent = whole = 0
    for seq in per_user.to_list():
        history, nxt = seq[:-1], seq[-1]
        recent += np.bincount(history[-3:], minlength=8).argmax() == nxt
        whole += np.bincount(history, minlength=8).argmax() == nxt
    assert recent / len(per_user) > whole / len(per_user) + 0.2


def test_recent_topic_beats_most_popular(data: SimulatedData) -> None:
    """A sequence-aware heuristic clearly beats MostPopular: the signal is learnable."""
    events, items = data.raw.events, data.raw.items
    assert items is not None
    popular = events.group_by("item_id").len().sort("len", "item_id", descending=True)
    ranked = popular["item_id"].to_list()
    by_topic = {
        k: group.sort("popularity", descending=True)["item_id"].to_list()
        for (k,), group in items.group_by("topic")
    }
    topic_of = dict(items.select("item_id", "topic").iter_rows())
    hits_pop = hits_seq = 0
    sequences = events.group_by("user_id", maintain_order=True).agg("item_id")["item_id"]
    for seq in sequences.to_list():
        seen, target = set(seq[:-1]), seq[-1]
        hits_pop += target in [i for i in ranked if i not in seen][:10]
        topic = topic_of[seq[-2]]
        hits_seq += target in [i for i in by_topic[topic] if i not in seen][:10]
    assert hits_seq > 2 * hits_pop


def test_save_is_readable(data: SimulatedData, tmp_path: Path) -> None:
    out = data.save(tmp_path / "sim")
    assert sorted(p.name for p in out.iterdir()) == ["events.csv", "items.csv", "truth.parquet"]
    raw = read_events(out / "events.csv")
    assert_frame_equal(raw.events, data.raw.events)
    assert_frame_equal(pl.read_parquet(out / "truth.parquet"), data.truth)
    assert pl.read_csv(out / "items.csv").height == 300


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        simulate(n_topics=1)
    with pytest.raises(ConfigError):
        simulate(min_len=10, max_len=5)
    with pytest.raises(ConfigError):
        simulate(drift=1.5)


def test_cli_simulate(tmp_path: Path, run) -> None:
    args = ["simulate", "--out", str(tmp_path / "s"), "--users", "20", "--items", "50"]
    result = CliRunner().invoke(app, [*args, "--topics", "4", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "events.csv").exists() and "events" in result.stdout
    result = run("data", "simulate", "--out", tmp_path / "t", "--topics", "1")
    assert result.code == 1 and result.err.startswith("error:") and "n_topics" in result.err
