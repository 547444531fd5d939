"""Every registered model under the Recommender contract, plus sequence-network checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.load import from_frame
from evorec.data.split import leave_one_out
from evorec.errors import ConfigError, EvorecError, ModelDirError, UnknownIdError
from evorec.evaluation.evaluator import evaluate
from evorec.models import EASE, MODELS, Ensemble, GRU4Rec, MostPopular, Recommender, SASRec
from evorec.models.sequential import SequentialRecommender

LOOSE = {"min_user_events": 1, "min_item_events": 1}
NEURAL = {"epochs": 2, "dim": 16, "max_len": 10, "batch_size": 16, "device": "cpu"}
MAX_LEN = NEURAL["max_len"]


def tiny_config(name: str) -> dict:
    if name == "ensemble":
        return {"model": "sasrec", "members": 2, "settings": NEURAL}
    return dict(NEURAL) if issubclass(MODELS[name], SequentialRecommender) else {}


def synthetic_frame(seed: int = 0, n_users: int = 40, n_items: int = 25) -> pl.DataFrame:
    """Original ids: users 1000+u (ints), items "i<n>" (strings); 4..14 events per user."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        n = int(rng.integers(4, 15))
        users += [1000 + u] * n
        items += [f"i{v}" for v in rng.integers(0, n_items, n)]
        times += sorted(rng.integers(0, 10_000, n).tolist())
    return pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times})


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Train with one torch thread: these tiny models gain nothing from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


_FITTED: dict[str, Recommender] = {}


def fit_tiny(name: str, dataset: Dataset) -> Recommender:
    """Each model fitted once on the module's dataset, shared by the tests."""
    if name not in _FITTED:
        _FITTED[name] = MODELS[name](tiny_config(name)).fit(dataset)
    return _FITTED[name]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return from_frame(synthetic_frame(), preprocess_config=LOOSE)


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, dataset) -> Recommender:
    return fit_tiny(request.param, dataset)


def history_ids(dataset: Dataset, user) -> set:
    row = int(dataset.encode_users([user])[0])
    return set(dataset.item_ids.gather(dataset.histories[row]).to_list())


# -- recommend --------------------------------------------------------------------------


def test_recommend_known_users(fitted, dataset):
    users = dataset.user_ids.to_list()[::-1][:4]
    recs = fitted.recommend(users=users, k=5)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs["user_id"].dtype == dataset.user_ids.dtype
    assert recs["item_id"].dtype == dataset.item_ids.dtype
    assert recs["user_id"].to_list() == [u for u in users for _ in range(5)]
    catalogue = set(dataset.item_ids.to_list())
    scores = fitted.score(dataset.histories.take(dataset.encode_users(users)))
    for r, user in enumerate(users):
        mine = recs.filter(pl.col("user_id") == user)
        assert mine["rank"].to_list() == [1, 2, 3, 4, 5]
        got = mine["item_id"].to_list()
        assert len(set(got)) == 5 and set(got) <= catalogue
        assert not set(got) & history_ids(dataset, user)
        assert mine["score"].to_list() == sorted(mine["score"].to_list(), reverse=True)
        # the top-5 of the model's own scores among unseen items
        idx = dataset.encode_items(got)
        np.testing.assert_allclose(mine["score"].to_numpy(), scores[r, idx].numpy(), rtol=1e-6)
        unseen = np.setdiff1d(
            np.arange(dataset.n_items), dataset.encode_items(sorted(history_ids(dataset, user)))
        )
        rest = np.setdiff1d(unseen, idx)
        assert scores[r, rest].max() <= mine["score"].min() + 1e-6


def test_recommend_without_filter_returns_whole_catalogue(fitted, dataset):
    user = dataset.user_ids[0]
    recs = fitted.recommend(users=[user], k=dataset.n_items + 5, filter_seen=False)
    assert recs.height == dataset.n_items
    assert set(recs["item_id"].to_list()) == set(dataset.item_ids.to_list())
    assert recs["rank"].to_list() == list(range(1, dataset.n_items + 1))
    filtered = fitted.recommend(users=[user], k=dataset.n_items + 5)
    assert filtered.height == dataset.n_items - len(history_ids(dataset, user))


def test_recommend_restricted_candidates(fitted, dataset):
    user = dataset.user_ids[3]
    seen = history_ids(dataset, user)
    unseen = [i for i in dataset.item_ids.to_list() if i not in seen]
    allowed = sorted(seen)[:2] + unseen[:4]
    recs = fitted.recommend(users=[user], items=allowed, k=10)
    assert set(recs["item_id"].to_list()) == set(unseen[:4])
    recs = fitted.recommend(users=[user], items=allowed, k=2)
    assert recs.height == 2 and set(recs["item_id"].to_list()) <= set(unseen[:4])
    recs = fitted.recommend(users=[user], items=allowed, k=10, filter_seen=False)
    assert set(recs["item_id"].to_list()) == set(allowed)
    with pytest.raises(UnknownIdError):
        fitted.recommend(users=[user], items=["no-such-item"])


def test_recommend_raw_histories(fitted, dataset):
    ids = dataset.item_ids.to_list()
    raw = [[ids[3], ids[7], ids[3]], [ids[0]], []]
    recs = fitted.recommend(histories=raw, k=4)
    assert recs.columns == ["row", "item_id", "score", "rank"]
    assert recs["row"].to_list() == [0] * 4 + [1] * 4 + [2] * 4
    expected = fitted.score(Histories.from_lists([dataset.encode_items(h) for h in raw]))
    popularity = dataset.item_popularity
    for row, history in enumerate(raw):
        mine = recs.filter(pl.col("row") == row)
        assert not set(mine["item_id"].to_list()) & set(history)
        idx = dataset.encode_items(mine["item_id"].to_list())
        if history:
            np.testing.assert_allclose(
                mine["score"].to_numpy(), expected[row, idx].numpy(), rtol=1e-6
            )
        else:  # an empty history falls back to popularity
            assert mine["score"].to_list() == popularity[idx].astype(float).tolist()
            assert popularity[idx].min() >= np.sort(popularity)[-4]


def test_recommend_errors(fitted, dataset):
    with pytest.raises(UnknownIdError):
        fitted.recommend(users=[-1])
    with pytest.raises(UnknownIdError):
        fitted.recommend(histories=[["i0", "nope"]])
    with pytest.raises(EvorecError):
        fitted.recommend()
    with pytest.raises(EvorecError):
        fitted.recommend(users=[dataset.user_ids[0]], histories=[[]])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unfitted_model_refuses(name):
    model = MODELS[name](tiny_config(name))
    with pytest.raises(EvorecError, match="not fitted"):
        model.recommend(users=[1])


# -- scores and vectors -----------------------------------------------------------------


def probe_histories(dataset: Dataset) -> Histories:
    """Stored histories (some longer than max_len) plus hand-made ones, one empty."""
    stored = dataset.histories.take(np.arange(min(10, dataset.n_users)))
    return Histories.from_lists(stored.to_lists() + [[1, 2, 1], [], list(range(15)), [0]])


def test_score_is_encode_times_item_vectors(fitted, dataset):
    hist = probe_histories(dataset)
    scores = fitted.score(hist)
    assert scores.shape == (len(hist), dataset.n_items)
    interest, items = fitted.encode(hist), fitted.item_vectors()
    assert interest.shape[0] == len(hist) and items.shape[0] == dataset.n_items
    assert interest.shape[1] == items.shape[1]
    dense = (
        torch.from_numpy(interest.astype(np.float32)) @ torch.from_numpy(items.astype(np.float32)).T
    )
    torch.testing.assert_close(scores.float(), dense, rtol=1e-5, atol=1e-5)


def test_encode_does_not_depend_on_batch_partners(fitted, dataset):
    hist = probe_histories(dataset)
    together = fitted.encode(hist)
    for r in (0, 3, len(hist) - 1):
        alone = fitted.encode(hist.take(np.array([r])))
        np.testing.assert_allclose(alone[0], together[r], rtol=1e-5, atol=1e-5)


def test_user_vectors(fitted, dataset):
    users = [dataset.user_ids[5], dataset.user_ids[0]]
    vectors = fitted.user_vectors(users)
    expected = fitted.encode(dataset.histories.take(np.array([5, 0])))
    np.testing.assert_allclose(vectors, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(UnknownIdError):
        fitted.user_vectors(["ghost"])


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_sequence_models_read_only_the_last_max_len_events(name, dataset):
    model = fit_tiny(name, dataset)
    long = list(range(MAX_LEN + 6))
    full = model.encode(Histories.from_lists([long]))
    tail = model.encode(Histories.from_lists([long[-MAX_LEN:]]))
    np.testing.assert_allclose(full, tail, rtol=1e-5, atol=1e-6)
    shorter = model.encode(Histories.from_lists([long[-MAX_LEN + 1 :]]))
    assert not np.allclose(full, shorter)


def test_ease_is_closed_form(dataset):
    """B = I - P / diag(P) with P = (X'X + l2 I)^-1, zero diagonal (Steck 2019)."""
    model = EASE(l2=3.0).fit(dataset)
    x = np.zeros((dataset.n_users, dataset.n_items))
    h = dataset.histories
    x[np.repeat(np.arange(dataset.n_users), h.lengths), h.items] = 1.0
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(dataset.n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.item_vectors().T, b, atol=1e-4)


def test_most_popular_scores_are_training_shares(dataset):
    model = MostPopular().fit(dataset)
    counts = dataset.item_popularity
    np.testing.assert_allclose(model.item_vectors()[:, 0], counts / counts.sum(), rtol=1e-6)
    user = dataset.user_ids[0]
    top = model.recommend(users=[user], k=5, filter_seen=False)["item_id"].to_list()
    assert counts[dataset.encode_items(top)].tolist() == sorted(counts, reverse=True)[:5]


# -- persistence ------------------------------------------------------------------------


def test_save_load_round_trip(fitted, dataset, tmp_path):
    path = fitted.save(tmp_path / "model", extra={"note": "x"}, files={"README.txt": "hi"})
    assert (path / "README.txt").read_text() == "hi"
    manifest = json.loads((path / "evorec-model.json").read_text())
    assert manifest["model"] == fitted.name and manifest["note"] == "x"
    for loaded in (Recommender.load(path), type(fitted).load(path)):
        assert type(loaded) is type(fitted)
        assert loaded.config == fitted.config
        assert loaded.dataset.events.equals(dataset.events)
        hist = probe_histories(dataset)
        assert torch.equal(loaded.score(hist), fitted.score(hist))
        users = dataset.user_ids.to_list()[:6]
        assert loaded.recommend(users=users, k=5).equals(fitted.recommend(users=users, k=5))
        raw = [["i1", "i2"], []]
        assert loaded.recommend(histories=raw).equals(fitted.recommend(histories=raw))


def test_load_errors(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    for name in ("state.pt", "config.yaml", "evorec-model.json", "dataset"):
        broken = tmp_path / f"no-{name}"
        shutil.copytree(path, broken)
        target = broken / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        with pytest.raises(ModelDirError, match=name):
            Recommender.load(broken)

    other = tmp_path / "other-format"
    shutil.copytree(path, other)
    manifest = json.loads((other / "evorec-model.json").read_text())
    manifest["format"] = 999
    (other / "evorec-model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="format 999"):
        Recommender.load(other)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(path, corrupt)
    (corrupt / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelDirError, match="state.pt"):
        Recommender.load(corrupt)

    with pytest.raises(ModelDirError):
        Recommender.load(tmp_path / "does-not-exist")
    wrong = next(cls for cls in MODELS.values() if cls is not type(fitted))
    with pytest.raises(ModelDirError, match=fitted.name):
        wrong.load(path)


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (MostPopular, {"seed": "abc"}),
        (MostPopular, {"bogus": 1}),
        (EASE, {"l2": 0}),
        (EASE, {"l2": -5.0}),
        (SASRec, {"dim": 0}),
        (SASRec, {"loss": "hinge"}),
        (SASRec, {"heads": 0}),
        (GRU4Rec, {"dropout": 1.5}),
        (GRU4Rec, {"max_len": 0}),
        (GRU4Rec, {"layerz": 2}),
    ],
)
def test_invalid_config_raises(cls, values):
    key = next(iter(values))
    with pytest.raises(ConfigError, match=key):
        cls(values)
    with pytest.raises(ConfigError, match=key):
        cls(**values)


def test_config_values_and_overrides_merge():
    model = SASRec({"dim": 8, "epochs": 3}, epochs=5)
    assert (model.config.dim, model.config.epochs) == (8, 5)
    assert SASRec(model.config).config == model.config


# -- sequence networks ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec])
def test_network_is_causal(cls):
    torch.manual_seed(0)
    n_items, length = 30, 10
    network = cls({**NEURAL, "dropout": 0.3}).build_network(n_items)
    network.eval()
    gen = torch.Generator().manual_seed(1)
    batch = torch.randint(1, n_items + 1, (5, length), generator=gen)
    batch[3, 7:] = 0  # a right-padded row
    with torch.no_grad():
        base = network(batch)
        assert base.shape == (5, length, NEURAL["dim"])
        for cut in (1, 4, 9):
            changed = batch.clone()
            changed[:, cut:] = torch.randint(1, n_items + 1, (5, length - cut), generator=gen)
            out = network(changed)
            torch.testing.assert_close(out[:, :cut], base[:, :cut], rtol=0, atol=1e-5)
            assert not torch.allclose(out[:, cut:], base[:, cut:], atol=1e-3)  # not a no-op


def cycle_data(n_users: int = 150, n_items: int = 30, seed: int = 0) -> Dataset:
    """Every user walks the catalogue in order: item i is always followed by i + 1 (mod n)."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        start, n = int(rng.integers(0, n_items)), int(rng.integers(8, 20))
        users += [u] * n
        items += [(start + j) % n_items for j in range(n)]
        times += list(range(n))
    frame = pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times})
    return from_frame(frame, preprocess_config=LOOSE)


@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax"])
def test_sasrec_learns_a_deterministic_pattern(loss):
    split = leave_one_out(cycle_data(n_users=100))
    pop = evaluate(MostPopular().fit(split), split.test, ks=(1,)).metrics["HR@1"]
    model = SASRec(
        epochs=6,
        patience=2,
        dim=32,
        max_len=10,
        batch_size=32,
        lr=5e-3,
        dropout=0.1,
        device="cpu",
        seed=0,
        loss=loss,
        n_negatives=8,
    ).fit(split)
    hr = evaluate(model, split.test, ks=(1,)).metrics["HR@1"]
    assert hr >= 0.8, hr
    assert hr > pop + 0.5
    assert model.fit_info["epochs"] >= 1 and model.fit_info["best_valid"]


@pytest.mark.parametrize("name", ["gru4rec", "sasrec"])
def test_training_is_reproducible_by_seed(name, dataset):
    def item_vectors(seed: int) -> np.ndarray:
        return MODELS[name]({**tiny_config(name), "seed": seed}).fit(dataset).item_vectors()

    first = item_vectors(0)
    np.testing.assert_array_equal(first, item_vectors(0))
    assert not np.allclose(first, item_vectors(1))


# -- ensemble -----------------------------------------------------------------------------


def test_ensemble_scores_are_the_sum_of_its_members(dataset):
    """Member k is the members' model trained alone with seed + k; i and v side by side."""
    ensemble = fit_tiny("ensemble", dataset)
    assert isinstance(ensemble, Ensemble)
    alone = [SASRec({**NEURAL, "seed": k}).fit(dataset) for k in (0, 1)]
    hist = dataset.histories
    torch.testing.assert_close(ensemble.score(hist), alone[0].score(hist) + alone[1].score(hist))
    assert ensemble.encode(hist).shape == (len(hist), 2 * NEURAL["dim"])
    assert ensemble.item_vectors().shape == (dataset.n_items, 2 * NEURAL["dim"])
    assert len(ensemble.fit_info["members"]) == 2
    joined = Ensemble.of(alone)
    assert torch.equal(joined.score(hist), ensemble.score(hist))
    with pytest.raises(ConfigError, match="member 1 is not a sasrec model"):
        Ensemble.of(alone[::-1])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": "nope"}, "unknown model 'nope'"),
        ({"model": "ensemble"}, "an ensemble cannot hold ensembles"),
        ({"settings": {"dim": -1}}, "invalid sasrec config: dim"),
        ({"members": 0}, "invalid ensemble config: members"),
    ],
)
def test_ensemble_rejects_bad_configs_before_training(config, message):
    with pytest.raises(ConfigError, match=message):
        Ensemble(config)
