"""Interest analytics: categories, timelines, shift points, the population summary, the
simulator's ground truth, and ``evorec inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import shared_dataset

from evorec.analytics import ItemCategories, ShiftSettings, interest_timeline, population_summary
from evorec.analytics.categories import OTHER
from evorec.analytics.timeline import (
    dataset_history,
    jensen_shannon,
    rolling_mix,
    shift_divergence,
    shift_points,
)
from evorec.analytics.truth import (
    adoption_lags,
    match_shifts,
    pearson,
    true_dominant,
    true_shifts,
)
from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.load import load_dataset
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.data.split import leave_one_out
from evorec.errors import DataError
from evorec.models import get_model_class
from evorec.models.base import Recommender
from evorec.store import EventStore


@pytest.fixture(scope="module")
def simulated() -> tuple[Dataset, Recommender]:
    sim = simulate(n_users=200, n_items=120, n_topics=5, seed=3)
    dataset = preprocess(sim.raw, PreprocessConfig(min_user_events=1, min_item_events=1))
    model = get_model_class("gru4rec")({"epochs": 3, "dim": 32, "seed": 0})
    return dataset, model.fit(leave_one_out(dataset))


@pytest.fixture(scope="module")
def model_dir(simulated: tuple[Dataset, Recommender], tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("analytics") / "model"
    simulated[1].save(path)
    return path


def _dataset_with_items(items: pl.DataFrame, events: list[tuple[int, int]]) -> Dataset:
    """A tiny dataset whose events are (user, item) pairs of internal indices."""
    frame = pl.DataFrame(
        {
            "user_idx": [u for u, _ in events],
            "item_idx": [i for _, i in events],
            "timestamp": list(range(len(events))),
            "behavior": [None] * len(events),
            "value": [1.0] * len(events),
        },
        schema_overrides={"behavior": pl.Int64},
    )
    n_users = max(u for u, _ in events) + 1
    return Dataset(
        frame,
        pl.Series("user_id", list(range(n_users))),
        pl.Series("item_id", items["item_id"]),
        items.with_columns(item_idx=pl.int_range(items.height)),
    )


def test_categories_of_topics_and_genres() -> None:
    topics = pl.DataFrame({"item_id": [10, 11, 12, 13], "topic": [1, 0, 1, 2]})
    data = _dataset_with_items(topics, [(0, 0), (0, 1), (0, 2), (0, 3)])
    categories = ItemCategories.from_dataset(data)
    assert categories.column == "topic"
    assert categories.names == ["topic 0", "topic 1", "topic 2"]
    assert categories.membership.tolist() == [[0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]

    genres = pl.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "genres": [["Drama", "Comedy"], ["Drama"], [], ["Horror", "Drama", "Western"]],
        }
    )
    # Drama is most watched, then Comedy; Horror and Western fall to "other" with max 2
    data = _dataset_with_items(genres, [(0, 0), (0, 0), (0, 1), (0, 1), (0, 3), (0, 2)])
    categories = ItemCategories.from_dataset(data, max_categories=2)
    assert categories.names == ["Comedy", "Drama", OTHER]
    np.testing.assert_allclose(
        categories.membership, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1], [0, 1 / 3, 2 / 3]]
    )
    assert categories.labels(3) == ["other", "Drama"]
    np.testing.assert_allclose(categories.mix(np.array([0, 1])), [0.25, 0.75, 0])


def test_categories_refuse_a_missing_column() -> None:
    data = _dataset_with_items(pl.DataFrame({"item_id": [1], "title": ["x"]}), [(0, 0)])
    with pytest.raises(DataError, match="no item category column"):
        ItemCategories.from_dataset(data)
    with pytest.raises(DataError, match="no item column 'genre'.*title"):
        ItemCategories.from_dataset(data, "genre")


def test_jensen_shannon_bounds() -> None:
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(jensen_shannon(p, q), [0.0, 1.0], atol=1e-12)


def test_a_planted_shift_is_found_where_it_starts() -> None:
    member = np.eye(3)[[0] * 20 + [2] * 20 + [1] * 3 + [0] * 15]
    settings = ShiftSettings(window=6, threshold=0.5)
    divergence = shift_divergence(member, 6)
    assert np.isnan(divergence[:4]).all() and np.isnan(divergence[-3:]).all()
    # the brief visit to category 1 (3 events) reaches the threshold neither side
    assert shift_points(divergence, settings) == [20, 40]
    assert shift_points(shift_divergence(np.eye(3)[[1] * 30], 6), settings) == []
    mix = rolling_mix(member, 4)
    np.testing.assert_allclose(mix[21], [0.5, 0, 0.5])
    np.testing.assert_allclose(mix[0], [1, 0, 0])


def test_shift_settings_are_checked() -> None:
    with pytest.raises(DataError, match="window"):
        ShiftSettings(window=1)
    with pytest.raises(DataError, match="threshold"):
        ShiftSettings(threshold=0)


def test_timeline_reads_every_prefix_in_one_encode(
    simulated: tuple[Dataset, Recommender], monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset, model = simulated
    categories = ItemCategories.from_dataset(dataset)
    user = dataset.user_ids[5]
    history = dataset_history(dataset, str(user))
    calls: list[int] = []
    encode = model.encode

    def counted(histories: Histories) -> np.ndarray:
        calls.append(len(histories))
        return encode(histories)

    monkeypatch.setattr(model, "encode", counted)
    timeline = interest_timeline(model, history, categories, max_steps=25)
    n = int(history.lengths[0])
    assert calls == [25]
    assert timeline.positions.tolist() == list(range(n - 25, n))
    assert timeline.model_share.shape == (25, 5) and timeline.observed.shape == (25, 5)
    np.testing.assert_allclose(timeline.model_share.sum(axis=1), 1.0)
    np.testing.assert_allclose(timeline.observed.sum(axis=1), 1.0)
    # the last step's top-N is the model's own recommendation after the whole history
    recommended = model.recommend([user], k=10)["item_id"].to_list()
    ids = dataset.item_ids.to_list()
    assert [ids[i] for i in timeline.recommended] == recommended
    record = timeline.to_dict(ids)
    assert record["categories"] == [f"topic {k}" for k in range(5)]
    assert len(record["events"]) == len(record["model_share"]) == 25
    assert record["events"][-1]["item_id"] == ids[int(history.items[-1])]
    json.dumps(record)


def test_population_summary(simulated: tuple[Dataset, Recommender]) -> None:
    dataset, model = simulated
    categories = ItemCategories.from_dataset(dataset)
    settings = ShiftSettings(window=5, threshold=0.5)
    summary = population_summary(
        model, dataset.histories, categories, settings=settings, max_users=150, periods=4
    )
    assert summary.users == 150 and len(summary.periods) == 4
    assert summary.trend.shape == (4, 5)
    np.testing.assert_allclose(summary.trend.sum(axis=1), 1.0)
    np.testing.assert_allclose(summary.recommended.sum(), 1.0)
    assert 0 < summary.coverage <= 1 and 0 <= summary.follow <= 1
    assert summary.periods == sorted(summary.periods)
    # the simulator's users switch topics every 10 events or so
    assert 0.5 < summary.users_shifting <= 1 and 2 < summary.shift_rate < 20
    assert summary.shift_rate == pytest.approx(100 * summary.shifts / summary.events)
    json.dumps(summary.to_dict())


def test_truth_helpers() -> None:
    # a mixture moving halfway to a target at each step, the target switching at step 3
    targets = np.eye(2)[[0, 0, 0, 1, 1, 1]] * 0.8 + 0.1
    mixtures = [targets[0]]
    for target in targets[1:]:
        mixtures.append((mixtures[-1] + target) / 2)
    dominant = true_dominant(np.array(mixtures))
    assert dominant.tolist() == [0, 0, 0, 1, 1, 1]
    assert true_shifts(dominant).tolist() == [3]
    assert match_shifts(np.array([4, 9]), np.array([3, 5]), 2) == (1, 1)
    assert match_shifts(np.array([2, 6]), np.array([3, 5]), 2) == (2, 2)
    share = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    assert adoption_lags(share, dominant) == [2]
    assert adoption_lags(share[:, ::-1] * 0, dominant) == [None]
    assert pearson(np.arange(4.0), 2 * np.arange(4.0) + 1) == pytest.approx(1.0)


def test_shift_points_match_the_simulators_true_shifts() -> None:
    sim = simulate(n_users=80, n_items=200, n_topics=8, seed=5)
    topics = sim.raw.items.sort("item_id")["topic"].to_numpy()
    member = np.eye(8)[topics]
    settings = ShiftSettings(window=5, threshold=0.45)
    found = true = hits = 0
    for _, events in sim.raw.events.sort("user_id", "timestamp").group_by(
        "user_id", maintain_order=True
    ):
        user = events["user_id"][0]
        mix = np.array(sim.truth.filter(pl.col("user_id") == user)["mixture"].to_list())
        detected = np.array(
            shift_points(shift_divergence(member[events["item_id"].to_numpy() - 1], 5), settings)
        )
        real = true_shifts(true_dominant(mix))
        hits += match_shifts(detected, real, 2)[0]
        found, true = found + len(detected), true + len(real)
    assert hits / found > 0.6 and hits / true > 0.4


def test_inspect_writes_figure_and_json(run, model_dir: Path, tmp_path: Path) -> None:
    result = run(
        "inspect", "--model-dir", model_dir, "--user", "5", "--out", tmp_path / "t.png",
        "--json", tmp_path / "t.json",
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "t.json").read_text())
    assert record["user_id"] == "5" and record["category_column"] == "topic"
    assert len(record["categories"]) == 5
    assert len(record["model_share"]) == len(record["events"]) == len(record["observed"])
    assert "shifts at events" in result.out


def test_inspect_reads_the_store(run, model_dir: Path, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(db)
    store.add_events(
        [
            {"user_id": "new", "item_id": str(item), "timestamp": 1_700_000_000 + n}
            for n, item in enumerate((1, 2, 3, 4, 5, 6, 999))
        ]
    )
    store.close()
    result = run(
        "inspect", "--model-dir", model_dir, "--user", "new", "--db", db,
        "--json", tmp_path / "t.json",
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    record = json.loads((tmp_path / "t.json").read_text())
    # item 999 is unknown to the model and left out
    assert [e["item_id"] for e in record["events"]] == [1, 2, 3, 4, 5, 6]


def test_inspect_refuses_bad_input(run, model_dir: Path, tmp_path: Path) -> None:
    result = run("inspect", "--model-dir", model_dir, "--user", "nobody", "--json", tmp_path / "x")
    assert result.code == 1 and "unknown user" in result.err and "Traceback" not in result.err
    result = run("inspect", "--model-dir", model_dir, "--user", "5", "--out", tmp_path / "x.txt")
    assert result.code == 1 and ".png" in result.err
    result = run("inspect", "--model-dir", model_dir, "--user", "5")
    assert result.code == 1 and "--out" in result.err
    result = run(
        "inspect", "--model-dir", model_dir, "--user", "5", "--json", tmp_path / "x.json",
        "--category", "colour",
    )  # fmt: skip
    assert result.code == 1 and "no item column 'colour'" in result.err


@pytest.mark.slow
def test_inspect_on_movielens_genres(run, tmp_path: Path) -> None:
    path = shared_dataset("ml-latest-small")
    dataset = load_dataset(path)
    model = get_model_class("pop")({}).fit(dataset)
    model.save(tmp_path / "model")
    user = str(dataset.user_ids[0])
    result = run(
        "inspect", "--model-dir", tmp_path / "model", "--user", user, "--out",
        tmp_path / "t.png", "--json", tmp_path / "t.json", "--max-steps", "120",
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    record = json.loads((tmp_path / "t.json").read_text())
    assert record["category_column"] == "genres"
    assert "Drama" in record["categories"] and len(record["categories"]) == 13
    assert len(record["events"]) == 120
    assert all(e["categories"] for e in record["events"])
    assert (tmp_path / "t.png").stat().st_size > 10_000
