"""Incremental updates of a sequence model from the event store, and the served model
following them (``serve --watch``).

The base model is SASRec trained on simulated drifting users. The new events follow a
pattern the base model cannot know: users walk a chain of 20 brand-new items
(``NEW + k`` -> ``NEW + k + 1``), so the hold-out (each updated user's last event) is a new
item the old model has no vector for.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from conftest import retrained_copy
from fastapi.testclient import TestClient

import evorec
from evorec.config import RunConfig
from evorec.data.dataset import Dataset
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.errors import EvorecError, UnknownIdError
from evorec.modeldir import model_version, point
from evorec.models import get_model_class
from evorec.serving import Service, create_app
from evorec.serving.server import running_server
from evorec.serving.watch import ModelWatcher
from evorec.store import EventStore
from evorec.training.incremental import (
    UpdateConfig,
    UpdateResult,
    drop_erased,
    extend_dataset,
    grow,
    update,
)
from evorec.training.pipeline import train

NEW = 10_000  # first new item id
CHAIN = 20
SETTINGS = UpdateConfig(epochs=20)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a busy machine
    sim = simulate(n_users=300, n_items=200, n_topics=6, seed=1)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    model = {"name": "sasrec", "epochs": 8, "dim": 32, "max_len": 30, "lr": 0.005}
    out = tmp_path_factory.mktemp("incremental") / "v1"
    train(RunConfig(model={**model, "device": "cpu"}), out, dataset=data)
    yield out
    torch.set_num_threads(threads)


@pytest.fixture
def store(base_dir: Path, tmp_path: Path) -> Iterator[EventStore]:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    store.import_dataset(evorec.load_model(base_dir).dataset)
    yield store
    store.close()


def chain_events(users: list[object], start: int, length: int, seed: int) -> list[dict]:
    """Each user walks ``length`` steps of the new-item chain from a random place."""
    rng = np.random.default_rng(seed)
    events = []
    for user in users:
        first = int(rng.integers(CHAIN))
        for step in range(length):
            item = NEW + (first + step) % CHAIN
            events.append({"user_id": user, "item_id": item, "timestamp": start + step})
    return events


def add_chains(store: EventStore, base_dir: Path, seed: int = 0) -> tuple[list, int]:
    """Chains for 120 known users and 30 new ones; returns the users and events added."""
    dataset = evorec.load_model(base_dir).dataset
    start = int(dataset.events["timestamp"].max()) + 10
    users = dataset.user_ids.to_list()[:120] + list(range(90_000, 90_030))
    return users, store.add_events(chain_events(users, start, 6, seed))


def test_update_learns_new_items_and_pattern(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    users, added = add_chains(store, base_dir)
    result = update(base_dir, store, tmp_path / "v2", SETTINGS)

    assert result.counts["new_events"] == added
    assert result.counts["new_items"] == CHAIN and result.counts["new_users"] == 30
    assert result.counts["holdout_users"] == len(users)
    # the old model has no vector for the held-out new items; the update learned them
    assert result.old["HR@10"] == 0.0
    assert result.new["HR@10"] > 0.5 and result.new["NDCG@10"] > 0.2

    model = evorec.load_model(tmp_path / "v2")
    vectors = model.item_vectors()
    assert vectors.shape[0] == model.n_items == evorec.load_model(base_dir).n_items + CHAIN
    fresh = vectors[model.dataset.encode_items(range(NEW, NEW + CHAIN))]
    assert np.isfinite(fresh).all() and len(np.unique(fresh.round(4), axis=0)) == CHAIN
    # the chain continues: anonymous histories and new users get the next new item
    recs = model.recommend(histories=[[NEW + 3, NEW + 4, NEW + 5]], k=10)
    assert NEW + 6 in recs["item_id"].to_list()
    new_user = model.recommend(users=[90_000], k=10)["item_id"].to_list()
    assert sum(item >= NEW for item in new_user) >= 5


def test_manifest_records_cutoff_parent_and_a_second_update_reads_only_later_events(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    base_manifest = json.loads((base_dir / "evorec-model.json").read_text())
    dataset = evorec.load_model(base_dir).dataset
    assert base_manifest["cutoff"] == {
        "timestamp": int(dataset.events["timestamp"].max()),
        "event_id": None,
        "store": None,
        "store_id": None,
    }
    add_chains(store, base_dir)
    update(base_dir, store, tmp_path / "v2", UpdateConfig(epochs=2))
    manifest = json.loads((tmp_path / "v2" / "evorec-model.json").read_text())
    events = store.events()
    assert manifest["cutoff"]["event_id"] == int(events["line"].max())
    assert manifest["cutoff"]["timestamp"] == int(events["timestamp"].max())
    assert manifest["cutoff"]["store_id"] == store.store_id
    assert manifest["parent"]["version"] == model_version(base_dir)
    assert manifest["lineage"] == [model_version(base_dir)]
    assert manifest["update"]["holdout"]["old"]["HR@10"] == 0.0

    # events older than the cut-off time still count: the cursor is the event id now
    late = chain_events([91_000, 91_001], 1_000, 4, seed=3)
    store.add_events(late)
    result = update(tmp_path / "v2", store, tmp_path / "v3", UpdateConfig(epochs=2))
    assert result.counts["new_events"] == len(late) and result.counts["new_users"] == 2
    manifest = json.loads((tmp_path / "v3" / "evorec-model.json").read_text())
    assert manifest["lineage"] == [model_version(base_dir), model_version(tmp_path / "v2")]
    with pytest.raises(EvorecError, match="no events after the model's cut-off"):
        update(tmp_path / "v3", store, tmp_path / "v4", UpdateConfig(epochs=2))
    assert not (tmp_path / "v4").exists()


def test_grow_keeps_old_rows_and_starts_new_ones_near_the_mean(base_dir: Path) -> None:
    model = evorec.load_model(base_dir)
    old = model.item_vectors()
    grow(model, model.n_items + 50, UpdateConfig(noise=0.1))
    grown = model.item_vectors()
    assert grown.shape == (len(old) + 50, old.shape[1])
    np.testing.assert_array_equal(grown[: len(old)], old)
    offset = np.abs(grown[len(old) :] - old.mean(0))
    assert (offset < 0.6 * old.std(0)).all() and offset.max() > 0


def test_text_ids_that_do_not_fit_turn_the_mapping_into_text(base_dir: Path) -> None:
    dataset = evorec.load_model(base_dir).dataset
    first = dataset.user_ids[0]
    events = pl.DataFrame(
        {
            "user_id": [str(first), "visitor-7"],
            "item_id": ["sku-1", str(dataset.item_ids[0])],
            "timestamp": [2_000_000_000, 2_000_000_001],
            "behavior": ["buy", "unknown"],
            "value": [None, 1.0],
            "line": [1, 2],
        },
        schema_overrides={"value": pl.Float64},
    )
    extended, is_new = extend_dataset(dataset, events)
    assert extended.user_ids.dtype == pl.Utf8 and extended.item_ids.dtype == pl.Utf8
    assert extended.n_users == dataset.n_users + 1 and extended.n_items == dataset.n_items + 1
    assert is_new.sum() == 2 and extended.n_events == dataset.n_events + 2
    user = extended.histories[int(extended.encode_users([str(first)])[0])]
    assert user[-1] == extended.encode_items(["sku-1"])[0]
    assert extended.encode_items([str(dataset.item_ids[0])])[0] == 0


def test_drop_erased_renumbers_the_other_users_and_keeps_their_histories(
    base_dir: Path,
) -> None:
    dataset = evorec.load_model(base_dir).dataset
    users = pl.DataFrame({"user_id": dataset.user_ids, "age": range(dataset.n_users)})
    dataset = dataset.with_events(dataset.events)
    dataset.users = users
    ids = dataset.user_ids.to_list()
    gone = [str(ids[0]), str(ids[7]), "never-seen"]
    kept, erased = drop_erased(dataset, gone)
    assert erased == [str(ids[0]), str(ids[7])]
    assert kept.user_ids.to_list() == ids[1:7] + ids[8:]
    assert kept.users is not None and kept.users["user_id"].to_list() == kept.user_ids.to_list()
    assert kept.n_events == dataset.n_events - sum(dataset.histories.lengths[[0, 7]])
    for user in (1, 8, dataset.n_users - 1):
        row = int(kept.encode_users([ids[user]])[0])
        np.testing.assert_array_equal(kept.histories[row], dataset.histories[user])
    assert drop_erased(dataset, ["never-seen"]) == (dataset, [])


def test_cli_update_links_the_new_version_and_bad_inputs_are_one_line(
    run, base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    add_chains(store, base_dir)
    db = f"sqlite:///{tmp_path / 'events.db'}"
    link = tmp_path / "current"
    result = run(
        "update", "--model-dir", base_dir, "--db", db, "--out", tmp_path / "v2",
        "--epochs", "2", "--link", link, "--quiet",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "hold-out: last event of 150 updated users" in result.out
    assert link.is_symlink() and link.resolve() == (tmp_path / "v2").resolve()

    pop = evorec.MostPopular().fit(evorec.load_model(base_dir).dataset).save(tmp_path / "pop")
    (tmp_path / "plain").mkdir()
    cases = {
        "no events after the model's cut-off": ["--model-dir", link, "--db", db],
        "needs a sequence model, not pop": ["--model-dir", pop, "--db", db],
        "model directory not found": ["--model-dir", tmp_path / "none", "--db", db],
        "use a sqlite:/// or postgresql:// URL": ["--model-dir", base_dir, "--db", "x://y"],
        "is not the model's cut-off store": [
            "--model-dir", link, "--db", f"sqlite:///{tmp_path / 'other.db'}"
        ],
        "exists and is not a link": [
            "--model-dir", base_dir, "--db", db, "--link", tmp_path / "plain"
        ],
    }  # fmt: skip
    for message, args in cases.items():
        result = run("update", *args, "--out", tmp_path / "v3", "--epochs", "1", "--quiet")
        assert result.code == 1 and result.err.startswith("error: ")
        assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_an_update_from_another_store_is_refused_unless_forced(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    add_chains(store, base_dir)
    update(base_dir, store, tmp_path / "v2", UpdateConfig(epochs=1))
    # another store, seeded from the same model: its event ids mean other events
    other = EventStore(f"sqlite:///{tmp_path / 'other.db'}")
    other.import_dataset(evorec.load_model(base_dir).dataset)
    cutoff = json.loads((tmp_path / "v2" / "evorec-model.json").read_text())["cutoff"]
    late = chain_events([92_000, 92_001], cutoff["timestamp"] + 1, 4, seed=5)
    other.add_events(late)
    with pytest.raises(EvorecError, match=f"store {other.store_id} is not the model's cut-off"):
        update(tmp_path / "v2", other, tmp_path / "v3", UpdateConfig(epochs=1))
    assert not (tmp_path / "v3").exists()
    # forced: the events after the cut-off time, and the cursor now belongs to `other`
    result = update(tmp_path / "v2", other, tmp_path / "v3", UpdateConfig(epochs=1), force=True)
    assert result.counts["new_events"] == len(late) and result.cutoff.store_id == other.store_id
    other.close()


def test_erased_users_leave_the_updated_model_and_the_service(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    users, _ = add_chains(store, base_dir)
    client = TestClient(create_app(Service(base_dir, store)))
    gone, back, new_gone = str(users[0]), str(users[1]), str(users[-1])  # new_gone: store only
    for user in (gone, back, new_gone):
        assert client.delete(f"/users/{user}").status_code == 200
    start = int(store.events()["timestamp"].max()) + 1
    store.add_events(chain_events([back], start, 3, seed=4))  # back again: a new user
    update(base_dir, store, tmp_path / "v2", UpdateConfig(epochs=1))

    # nothing of the erased users in the new version's files
    saved = Dataset.load(tmp_path / "v2" / "dataset")
    ids = saved.user_ids.cast(pl.Utf8)
    assert gone not in ids and new_gone not in ids
    assert saved.events["user_idx"].max() < saved.n_users == len(ids.unique())
    returned = saved.histories[int(saved.encode_users([users[1]])[0])]
    assert (
        saved.item_ids.gather(returned).to_list()
        == store.history(back)["item_id"].cast(pl.Int64).to_list()
    )
    model = evorec.load_model(tmp_path / "v2")
    with pytest.raises(UnknownIdError):
        model.recommend(users=[users[0]], k=5)
    # the store was seeded with the base model's events: the new version holds exactly its
    stored = store.events()
    assert saved.n_events == stored.height
    assert set(ids) == set(stored["user_id"])

    served = TestClient(create_app(Service(tmp_path / "v2", store)))
    for user in (gone, new_gone):
        assert served.get(f"/users/{user}/recommendations").status_code == 404
        assert served.get(f"/users/{user}/history").status_code == 404
    assert served.get(f"/users/{back}/recommendations").status_code == 200


def test_watch_swaps_in_an_update_while_requests_run(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    link = tmp_path / "current"
    point(link, base_dir)
    service = Service(link, store)
    client = TestClient(create_app(service))
    watcher = ModelWatcher(service, link, interval=0.05).start()
    old = service.current.version
    users, _ = add_chains(store, base_dir)
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer(user: object) -> None:
        while not stop.is_set():
            response = client.get(f"/users/{user}/recommendations")
            statuses.append(response.status_code)
            versions.append(response.json()["model_version"])

    threads = [threading.Thread(target=hammer, args=(u,)) for u in (users[0], 90_001)]
    for thread in threads:
        thread.start()
    try:
        update(base_dir, store, tmp_path / "v2", UpdateConfig(epochs=2))
        point(link, tmp_path / "v2")
        deadline = time.monotonic() + 120
        while service.current.version == old and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = len(versions)
        while len(versions) < seen + 10:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    new = model_version(tmp_path / "v2")
    assert service.current.version == new and versions[-1] == new
    assert set(statuses) == {200} and set(versions) <= {old, new} and old in versions

    (tmp_path / "broken").mkdir()
    point(link, tmp_path / "broken")
    assert watcher.check() is None and service.current.version == new
    watcher.stop()
    body = client.get("/users/90001/recommendations").json()
    assert body["model_version"] == new and body["source"] == "model"


def test_serve_watch_swaps_versions_in_a_running_server(base_dir: Path, tmp_path: Path) -> None:

    retrained = retrained_copy(base_dir, tmp_path / "v2")
    link = tmp_path / "current"
    point(link, base_dir)
    options = ("--watch", "--watch-interval", "0.2")
    user = evorec.load_model(base_dir).dataset.user_ids[0]
    statuses: list[int] = []
    versions: list[str] = []
    with (
        running_server(link, f"sqlite:///{tmp_path / 'events.db'}", *options) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):

        def get() -> None:
            response = http.get(f"/users/{user}/recommendations")
            statuses.append(response.status_code)
            versions.append(response.json()["model_version"])

        for _ in range(5):
            get()
        point(link, retrained)
        deadline = time.monotonic() + 120
        while versions[-1] != model_version(retrained) and time.monotonic() < deadline:
            get()
    assert set(statuses) == {200}
    assert versions[0] == model_version(base_dir) and versions[-1] == model_version(retrained)


def small_data() -> Dataset:
    sim = simulate(n_users=120, n_items=80, n_topics=4, seed=2)
    return preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))


def update_with_new_items(data: Dataset, tmp_path: Path, new_items: int) -> UpdateResult:
    """Store ``data`` plus 4 events each for 30 users over ``new_items`` brand-new items,
    then update the model saved in ``tmp_path / "v1"`` into ``tmp_path / "v2"``."""
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    store.import_dataset(data)
    start = int(data.events["timestamp"].max()) + 1
    store.add_events(
        {"user_id": user, "item_id": NEW + (n + step) % new_items, "timestamp": start + step}
        for n, user in enumerate(data.user_ids.to_list()[:30])
        for step in range(4)
    )
    try:
        return update(tmp_path / "v1", store, tmp_path / "v2", UpdateConfig(epochs=1))
    finally:
        store.close()


@pytest.mark.parametrize("name", ["gru4rec", "lstm", "caser", "bert4rec", "tisasrec", "hstu"])
def test_every_sequence_model_grows_and_updates(
    name: str, tmp_path: Path, one_torch_thread: None
) -> None:
    data = small_data()
    model = get_model_class(name)(epochs=1, dim=16, max_len=20, device="cpu").fit(data)
    model.save(tmp_path / "v1")
    table = model.network.item_embedding.weight.detach().clone()
    grow(model, model.n_items + 7, UpdateConfig())
    grown = model.network.item_embedding.weight.detach()
    rows = data.n_items + 1  # padding + items; BERT4Rec's [MASK] row follows them
    assert len(grown) == len(table) + 7
    torch.testing.assert_close(grown[:rows], table[:rows])
    torch.testing.assert_close(grown[rows + 7 :], table[rows:])

    result = update_with_new_items(data, tmp_path, 7)
    updated = evorec.load_model(tmp_path / "v2")
    assert result.counts["new_items"] == 7 and updated.n_items == data.n_items + 7
    assert np.isfinite(updated.item_vectors()).all()
    assert len(updated.recommend(users=[data.user_ids[0]], k=5)) == 5


def test_reject_worse_writes_nothing_when_the_hold_out_drops(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    # each new event is the old model's own first choice: the old model scores NDCG@10 = 1,
    # and fine-tuning at a destructive learning rate can only lose
    model = evorec.load_model(base_dir)
    users = model.dataset.user_ids.to_list()[:60]
    top = model.recommend(users=users, k=1, filter_seen=not model.dataset.has_repeats)
    start = int(model.dataset.events["timestamp"].max()) + 1
    store.add_events(
        {"user_id": user, "item_id": item, "timestamp": start}
        for user, item in zip(top["user_id"], top["item_id"], strict=True)
    )
    settings = UpdateConfig(epochs=2, lr=1.0)
    with pytest.raises(EvorecError, match=r"NDCG@10 .* < old 1\.0000 on the hold-out"):
        update(base_dir, store, tmp_path / "v2", settings, reject_worse=True)
    assert not (tmp_path / "v2").exists()
    result = update(base_dir, store, tmp_path / "v2", settings)
    assert result.old["NDCG@10"] == pytest.approx(1.0) and result.new["NDCG@10"] < 1.0


def test_a_content_aware_model_grows_its_features_and_updates(
    tmp_path: Path, one_torch_thread: None
) -> None:
    data = small_data()
    model = evorec.SASRec(
        epochs=1, dim=16, max_len=20, device="cpu", item_features=["id", "attributes"]
    ).fit(data)
    model.save(tmp_path / "v1")
    attributes = model.network.item_encoder.attributes.weight.detach().clone()
    old_vectors = model.item_vectors()

    result = update_with_new_items(data, tmp_path, 5)
    updated = evorec.load_model(tmp_path / "v2")
    assert result.counts["new_items"] == 5 and updated.n_items == data.n_items + 5
    features = updated.features
    assert features is not None and features.n_items == updated.n_items
    # new items have no attribute tokens; old items keep theirs
    lengths = np.diff(features.attribute_offsets)
    assert (lengths[data.n_items :] == 0).all() and (lengths[: data.n_items] > 0).any()
    assert features.trained[data.n_items :].all()
    assert updated.network.item_encoder.attributes.weight.shape == attributes.shape
    vectors = updated.item_vectors()
    assert vectors.shape == (data.n_items + 5, old_vectors.shape[1])
    assert np.isfinite(vectors).all()
    assert len(updated.recommend(histories=[[NEW, NEW + 1]], k=5)) == 5


def test_the_saved_update_also_learns_the_hold_out(
    base_dir: Path, store: EventStore, tmp_path: Path, one_torch_thread: None
) -> None:
    """Every updated user ends with the same new item: it exists only in the hold-out, so
    only the refit (fine-tuned again with the hold-out) learns it."""
    dataset = evorec.load_model(base_dir).dataset
    start = int(dataset.events["timestamp"].max()) + 10
    users = dataset.user_ids.to_list()[:120]
    events = chain_events(users, start, 6, seed=0)
    last = NEW + 100
    events += [{"user_id": u, "item_id": last, "timestamp": start + 6} for u in users]
    store.add_events(events)
    history = [[NEW + 3, NEW + 4, NEW + 5]]
    measured = update(base_dir, store, tmp_path / "plain", SETTINGS, refit=False)
    refit = update(base_dir, store, tmp_path / "refit", SETTINGS)
    assert refit.old == measured.old and refit.new == measured.new  # the same measurement
    assert last not in measured.model.recommend(histories=history, k=10)["item_id"].to_list()
    saved = evorec.load_model(tmp_path / "refit")
    assert last in saved.recommend(histories=history, k=3)["item_id"].to_list()
    manifest = json.loads((tmp_path / "refit" / "evorec-model.json").read_text())
    assert manifest["update"]["refit"] is True
    assert manifest["fit_info"]["refit"]["events"] > 0
