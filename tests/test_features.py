"""Item content features: encoders, text cache, fusion, feature-aware SASRec, cold items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

import evorec
from evorec.data.dataset import Dataset
from evorec.data.load import from_frame, load_dataset
from evorec.data.split import EvalSet
from evorec.errors import ConfigError
from evorec.evaluation.cold import cold_item_split, evaluate_cold
from evorec.evaluation.evaluator import exclude_seen, target_ranks
from evorec.features import ItemEncoder, TextEmbedder, build_item_features, item_columns
from evorec.features.items import numeric_matrix
from evorec.features.text import cache_file

TINY = {"dim": 16, "layers": 1, "max_len": 20, "epochs": 2, "batch_size": 256}


@pytest.fixture(scope="module")
def lastfm(datasets_dir: Path) -> Dataset:
    """LastFM (S3-Rec): 1,090 users, 3,646 artists with tag attributes."""
    return load_dataset(datasets_dir / "amazon-s3rec" / "LastFM.txt")


@pytest.fixture(scope="module")
def scientific(datasets_dir: Path) -> Dataset:
    """Amazon Scientific (UniSRec) cut to its 150 most popular items, with their texts."""
    full = load_dataset(datasets_dir / "amazon-scientific-text")
    top = np.argsort(-full.item_popularity, kind="stable")[:150]
    keep = np.isin(full.events["item_idx"].to_numpy(), top)
    kept = full.events.filter(pl.Series(keep))
    events = pl.DataFrame(
        {
            "user_id": full.user_ids.gather(kept["user_idx"]),
            "item_id": full.item_ids.gather(kept["item_idx"]),
        }
    )
    return from_frame(
        events,
        timestamp=None,
        items=full.items.drop("item_idx"),
        preprocess_config={"min_user_events": 3, "min_item_events": 1},
        name="scientific-top150",
    )


@pytest.fixture(scope="module")
def text_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data home shared by this module's text tests, so the texts are embedded once."""
    return tmp_path_factory.mktemp("text-home")


def test_text_embeddings_are_cached_per_text(
    scientific: Dataset, monkeypatch: pytest.MonkeyPatch, text_home: Path
) -> None:
    monkeypatch.setenv("EVOREC_HOME", str(text_home))
    texts = scientific.items["text"].head(12).to_list()
    first = TextEmbedder()
    vectors = first.embed(texts)
    assert vectors.shape == (12, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert cache_file("all-MiniLM-L6-v2").exists()
    again = TextEmbedder()
    np.testing.assert_array_equal(again.embed(texts), vectors)
    assert again.computed == 0  # every text came from the cache
    edited = [*texts[:3], texts[3] + " Pack of 2", *texts[4:]]
    changed = TextEmbedder()
    out = changed.embed(edited)
    assert changed.computed == 1
    assert not np.allclose(out[3], vectors[3])
    np.testing.assert_array_equal(np.delete(out, 3, 0), np.delete(vectors, 3, 0))
    assert [p.name for p in cache_file("x").parent.iterdir()] == ["all-MiniLM-L6-v2.npz"]


def test_attribute_tokens_follow_the_item_table(lastfm: Dataset) -> None:
    assert item_columns(lastfm) == {"attributes": ["attributes"], "numeric": [], "text": []}
    features = build_item_features(lastfm, ["id", "attributes"], text_model="unused")
    offsets, values = features.attribute_offsets, features.attribute_values
    assert offsets.shape == (lastfm.n_items + 1,) and offsets[-1] == len(values)
    assert values.max() < features.n_attributes
    table = lastfm.items.sort("item_idx")
    counts = table["attributes"].list.n_unique().to_numpy()
    np.testing.assert_array_equal(np.diff(offsets)[table["item_idx"].to_numpy()], counts)
    distinct = table["attributes"].explode().drop_nulls().n_unique()
    assert features.n_attributes == distinct
    again = build_item_features(lastfm, ["attributes"], text_model="unused")
    np.testing.assert_array_equal(again.attribute_values, values)


def test_numeric_attributes_are_z_scored(datasets_dir: Path) -> None:
    movies = load_dataset(datasets_dir / "ml-latest-small").items
    # the release year of films from the 1900s; later films have none (missing values)
    movies = movies.with_columns(
        year=pl.col("title").str.extract(r"\((19\d\d)\)\s*$").cast(pl.Float64)
    )
    matrix = numeric_matrix(movies, ["year"], len(movies))
    known = movies["year"].is_not_null().to_numpy()
    assert matrix.shape == (len(movies), 1) and not known.all()
    assert abs(matrix[known, 0].mean()) < 1e-4 and abs(matrix[known, 0].std() - 1) < 1e-2
    assert (matrix[~known, 0] == 0).all()
    oldest = movies["item_idx"][int(movies["year"].arg_min())]
    assert matrix[oldest, 0] == matrix[:, 0].min()


def test_missing_side_data_is_a_config_error(scientific: Dataset) -> None:
    with pytest.raises(ConfigError, match="item_features: 'attributes'.*scientific-top150"):
        build_item_features(scientific, ["id", "attributes"], text_model="unused")


@pytest.mark.parametrize("fusion", ["sum", "concat", "gated"])
def test_fusion_modes(lastfm: Dataset, fusion: str) -> None:
    train = lastfm.with_events(lastfm.events.filter(pl.col("item_idx") >= 10))
    features = build_item_features(train, ["id", "attributes"], text_model="unused")
    assert not features.trained[:10].any() and features.trained[10:].any()
    torch.manual_seed(0)
    encoder = ItemEncoder(features, ["id", "attributes"], 8, fusion).eval()
    table = torch.randn(lastfm.n_items + 2, 8)  # padding, items, one extra row (a [MASK])
    out = encoder(table)
    assert out.shape == table.shape
    assert torch.equal(out[0], table[0]) and torch.equal(out[-1], table[-1])
    # untrained items are their content alone: their id rows do not matter
    moved = table.clone()
    moved[1:11] += 5.0
    changed = encoder(moved)
    assert torch.equal(changed[1:11], out[1:11])
    assert not torch.allclose(encoder(table * 2)[11:20], out[11:20])


def test_feature_sasrec_saves_and_loads_identical_scores(
    lastfm: Dataset, tmp_path: Path, one_torch_thread: None
) -> None:
    split = evorec.leave_one_out(lastfm)
    model = evorec.SASRec(
        **TINY, item_features=["id", "attributes"], fusion="concat", valid_users=200
    ).fit(split)
    assert model.network.item_encoder is not None
    loaded = evorec.load_model(model.save(tmp_path / "m"))
    assert loaded.config.item_features == ["id", "attributes"]
    hist = lastfm.histories.take(np.arange(50))
    assert torch.equal(model.score(hist), loaded.score(hist))
    np.testing.assert_array_equal(model.item_vectors(), loaded.item_vectors())


def test_cold_items_never_reach_training(lastfm: Dataset) -> None:
    cold = cold_item_split(lastfm, fraction=0.1, seed=3)
    assert len(cold.cold_items) == round(0.1 * lastfm.n_items)
    cold_set = set(cold.cold_items.tolist())
    for part in (cold.split.train, cold.split.full):
        assert not cold_set & set(part.events["item_idx"].unique().to_list())
    assert not cold_set & set(cold.split.valid.targets.items.tolist())
    assert set(cold.test.targets.items.tolist()) <= cold_set
    assert not cold_set & set(cold.test.histories.items.tolist())
    assert (cold.test.histories.lengths > 0).all() and (cold.test.targets.lengths > 0).all()
    assert cold.split.full.n_items == lastfm.n_items  # cold items stay in the catalogue


def mean_target_rank(model: evorec.SASRec, test: EvalSet) -> float:
    """Mean 0-based rank of the users' target items, history items filtered."""
    scores = model.score(test.histories)
    exclude_seen(scores, test.histories)
    return float(np.concatenate(target_ranks(scores, test.targets, len(test))).mean())


def test_content_makes_cold_items_reachable(lastfm: Dataset, one_torch_thread: None) -> None:
    cold = cold_item_split(lastfm, fraction=0.2, seed=0)
    test = cold.test.subset(np.arange(300))
    settings = {**TINY, "epochs": 3, "valid_users": 200}
    id_only = evorec.SASRec(**settings).fit(cold.split)
    content = evorec.SASRec(**settings, item_features=["id", "attributes"], id_dropout=0.3)
    content.fit(cold.split)
    popular = evaluate_cold(evorec.MostPopular().fit(cold.split), cold).metrics
    assert popular["Recall@10"] == 0.0  # cold items have no events to be popular with
    # id-only: cold rows are untrained random ids, ranked about in the middle; with content
    # they rank by their attributes, higher
    id_rank, content_rank = mean_target_rank(id_only, test), mean_target_rank(content, test)
    assert content_rank < 0.95 * id_rank, (content_rank, id_rank)


def test_text_sasrec_trains_on_real_text(
    scientific: Dataset, monkeypatch: pytest.MonkeyPatch, text_home: Path, one_torch_thread: None
) -> None:
    monkeypatch.setenv("EVOREC_HOME", str(text_home))
    split = evorec.leave_one_out(scientific)
    model = evorec.SASRec(**TINY, item_features=["id", "text"], fusion="gated").fit(split)
    assert model.features.text.shape == (scientific.n_items, 384)
    metrics = evorec.evaluate(model, split.test).metrics
    assert 0 < metrics["NDCG@10"] <= metrics["HR@10"] <= 1
    recs = model.recommend(histories=[[scientific.item_ids[0]]], k=5)
    assert recs.height == 5
