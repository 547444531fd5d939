"""The Python API end to end: SASRec on real data beats popularity; a pandas round trip.

The real-data tests use a user subset of Amazon Beauty (S3-Rec preprocessing, from
``../shared/datasets/amazon-s3rec``): every second user line, written to a temporary file
with Polars. After 5-core filtering that is about 6,200 users and 4,100 items, a strongly
sequential catalogue on which popularity is weak, so three epochs of a small SASRec beat
it clearly (as a few epochs of every other model do), with enough test users (one per
user, full ranking) for the gap to be far outside noise; it trains in 10-20 s on one
busy core. (LastFM, the other small set, has only
1,090 users and a strong popularity baseline: the margin after a few epochs is thin.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from conftest import shared_dataset
from polars.testing import assert_frame_equal

import evorec
from evorec.errors import UnknownIdError


@pytest.fixture(scope="module")
def beauty_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_dataset("amazon-s3rec/Beauty.txt")
    # one line per user: "user item item ..." (no tabs, no quotes)
    lines = pl.read_csv(
        source, has_header=False, new_columns=["line"], separator="\t", quote_char=None
    )
    path = tmp_path_factory.mktemp("beauty") / "beauty_half.txt"
    lines.gather_every(2).write_csv(path, include_header=False, quote_style="never")
    return path


@pytest.fixture(scope="module")
def beauty_split(beauty_subset: Path) -> tuple[evorec.Split, float]:
    """The subset's leave-one-out split and MostPopular's test NDCG@10 on it."""
    split = evorec.leave_one_out(evorec.load_dataset(beauty_subset))
    popular = evorec.MostPopular().fit(split)
    return split, evorec.evaluate(popular, split.test).metrics["NDCG@10"]


@pytest.mark.slow
def test_sasrec_beats_popularity_on_real_data(beauty_subset: Path, one_torch_thread) -> None:
    data = evorec.load_dataset(beauty_subset)
    assert data.n_users > 5000 and data.n_items > 3000
    split = evorec.leave_one_out(data)

    popular = evorec.MostPopular().fit(split)
    pop_ndcg = evorec.evaluate(popular, split.test).metrics["NDCG@10"]

    sasrec = evorec.SASRec(
        epochs=3, dim=32, max_len=50, lr=0.005, dropout=0.2, batch_size=128, device="cpu"
    ).fit(split)
    result = evorec.evaluate(sasrec, split.test)
    ndcg = result.metrics["NDCG@10"]

    assert result.users == data.n_users
    assert [h["epoch"] for h in sasrec.fit_info["history"]] == [1, 2, 3]
    assert ndcg > pop_ndcg, f"SASRec NDCG@10 {ndcg:.4f} <= MostPopular {pop_ndcg:.4f}"
    assert result.metrics["HR@10"] > evorec.evaluate(popular, split.test).metrics["HR@10"]


FEW_EPOCHS = {"dim": 32, "max_len": 50, "dropout": 0.2, "batch_size": 128, "device": "cpu"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("ease", {}),
        ("gru4rec", {**FEW_EPOCHS, "epochs": 3, "lr": 0.01, "dropout": 0.0}),
        ("lstm", {**FEW_EPOCHS, "epochs": 3, "lr": 0.01, "dropout": 0.0}),
        ("caser", {**FEW_EPOCHS, "epochs": 3, "lr": 0.005}),
        # the cloze task scores a few masked positions per sequence: more, smaller steps
        (
            "bert4rec",
            {
                **FEW_EPOCHS,
                "epochs": 6,
                "lr": 0.005,
                "dropout": 0.1,
                "mask_prob": 0.4,
                "batch_size": 64,
            },
        ),
        ("tisasrec", {**FEW_EPOCHS, "epochs": 3, "lr": 0.005}),
        ("hstu", {**FEW_EPOCHS, "epochs": 3, "lr": 0.005}),
    ],
)
def test_each_model_beats_popularity_after_a_few_epochs(
    beauty_split: tuple[evorec.Split, float], name: str, config: dict, one_torch_thread
) -> None:
    split, pop_ndcg = beauty_split
    model = evorec.get_model_class(name)(config).fit(split)
    ndcg = evorec.evaluate(model, split.test).metrics["NDCG@10"]
    assert ndcg > 1.5 * pop_ndcg, f"{name} NDCG@10 {ndcg:.4f}, MostPopular {pop_ndcg:.4f}"


def pandas_events(n_users: int = 30, n_items: int = 20, seed: int = 0) -> pd.DataFrame:
    """String ids (``user-003``, ``sku-07``) and datetime timestamps, as an app logs them."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = int(rng.integers(6, 15))
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 30)))
        for step, item in enumerate(rng.integers(0, n_items, n)):
            rows.append((f"user-{u:03d}", f"sku-{item:02d}", start + pd.Timedelta(hours=step)))
    return pd.DataFrame(rows, columns=["customer", "product", "when"])


def test_pandas_round_trip_keeps_original_ids(tmp_path: Path, one_torch_thread) -> None:
    frame = pandas_events()
    data = evorec.from_frame(
        frame,
        user="customer",
        item="product",
        timestamp="when",
        preprocess_config={"min_user_events": 2, "min_item_events": 2},
    )
    assert data.has_time and data.n_users == frame["customer"].nunique()
    model = evorec.SASRec(epochs=1, dim=8, max_len=10, device="cpu").fit(data)

    users = ["user-004", "user-017"]
    recs = model.recommend(users, k=5)
    assert isinstance(recs, pl.DataFrame)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs.schema["user_id"] == pl.String and recs.schema["item_id"] == pl.String
    assert recs.height == 10
    assert recs["user_id"].to_list() == [users[0]] * 5 + [users[1]] * 5
    assert set(recs["item_id"]) <= set(frame["product"])
    for user in users:
        mine = recs.filter(pl.col("user_id") == user)
        assert mine["rank"].to_list() == [1, 2, 3, 4, 5]
        seen = set(frame.loc[frame["customer"] == user, "product"])
        assert not seen & set(mine["item_id"])

    raw = model.recommend(histories=[["sku-01", "sku-02"]], k=3)
    assert raw["row"].to_list() == [0, 0, 0]
    assert not {"sku-01", "sku-02"} & set(raw["item_id"])

    with pytest.raises(UnknownIdError, match="nobody"):
        model.recommend(["nobody"])

    loaded = evorec.load_model(model.save(tmp_path / "model"))
    assert_frame_equal(loaded.recommend(users, k=5), recs)
