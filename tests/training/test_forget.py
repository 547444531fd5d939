"""Forgetting users: sharded (SISA) training, ``evorec forget``, the service's erasure path,
no trace of an erased id left in any file, and the membership-inference check.

The base model is a three-shard SASRec trained on simulated users (epochs chosen on
validation, then refit on every event)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from sqlalchemy import create_engine

import evorec
from evorec.config import RunConfig
from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.errors import ModelDirError
from evorec.evaluation.membership import attack_auc, membership_auc, membership_scores
from evorec.modeldir import Shards, model_version, point, read_manifest, recorded_shards
from evorec.models import get_model_class
from evorec.models.ensemble import Sharded
from evorec.store import EventStore
from evorec.store.events import MIGRATIONS, erased_table, erasure_digest, version_table
from evorec.training.forget import NothingToForget, forget, member_settings
from evorec.training.incremental import drop_erased
from evorec.training.pipeline import train

SETTINGS = {"epochs": 3, "dim": 16, "max_len": 20, "lr": 0.005, "device": "cpu"}
SHARDED = {"name": "sharded", "model": "sasrec", "shards": 3, "settings": SETTINGS}


@pytest.fixture(scope="module")
def data() -> Dataset:
    sim = simulate(n_users=150, n_items=80, n_topics=4, seed=3)
    return preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))


@pytest.fixture(scope="module")
def base_dir(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("forget") / "v1"
    train(RunConfig(model=SHARDED), out, dataset=data, refit=True)
    yield out
    torch.set_num_threads(threads)


def flat_state(model: Any) -> dict[str, torch.Tensor]:
    """A model's parameters as ``name -> tensor`` (nested state dicts flattened)."""
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        elif isinstance(value, torch.Tensor | np.ndarray):
            flat[prefix] = torch.as_tensor(value)

    walk("", model.saved_state())
    return flat


def same_parameters(a: Any, b: Any) -> bool:
    left, right = flat_state(a), flat_state(b)
    assert left, "no parameters found"
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def user_in_shard(model: Sharded, k: int) -> str:
    ids = model.fitted_dataset().user_ids.cast(pl.Utf8).to_list()
    return next(u for u, s in zip(ids, model.shards.of(ids), strict=True) if s == k)


# -- the sharded model -------------------------------------------------------------------


def test_a_sharded_model_trains_each_member_on_its_shard_and_scores_their_sum(
    base_dir: Path, data: Dataset, one_torch_thread: None
) -> None:
    model = evorec.load_model(base_dir)
    assert isinstance(model, Sharded) and len(model.members) == 3
    histories = data.histories.take(np.arange(12))
    total = sum(member.score(histories) for member in model.members)
    torch.testing.assert_close(model.score(histories), total, rtol=1e-5, atol=1e-5)
    # the manifest records the rule and the users per shard, which partition the users
    manifest = read_manifest(base_dir)
    shards = recorded_shards(manifest, base_dir)
    assert shards == Shards(3)
    ids = data.user_ids.cast(pl.Utf8).to_list()
    assert manifest["shards"]["users"] == np.bincount(shards.of(ids), minlength=3).tolist()
    # a member learns from its shard's users alone
    shard = model.user_shards(data)
    for k in range(3):
        own = model.shard_data(k, data, shard)
        users = np.unique(own.events["user_idx"].to_numpy())
        assert (shard[users] == k).all() and len(users) == (shard == k).sum()
    # saved and loaded, the scores stay
    model.save(base_dir.parent / "copy")
    again = evorec.load_model(base_dir.parent / "copy")
    torch.testing.assert_close(again.score(histories), model.score(histories))


def test_an_unknown_shard_rule_is_refused_naming_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="rule 'md5'"):
        recorded_shards({"shards": {"n": 2, "rule": "md5"}}, tmp_path / "evorec-model.json")


# -- forgetting --------------------------------------------------------------------------


def test_forgetting_retrains_only_the_users_shard_exactly_as_training_without_them(
    base_dir: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    old = evorec.load_model(base_dir)
    assert isinstance(old, Sharded)
    user = user_in_shard(old, 1)
    result = forget(base_dir, [user], tmp_path / "v2", keep_old=True)
    assert result.retrained == [1] and result.shards == 3 and result.users == 1
    new = evorec.load_model(tmp_path / "v2")
    assert isinstance(new, Sharded)
    for k in (0, 2):
        assert same_parameters(old.members[k], new.members[k])
    assert not same_parameters(old.members[1], new.members[1])
    # exact: member 1 is the member that training without the user gives
    kept, found = drop_erased(old.fitted_dataset(), [user])
    assert found == [user]
    fresh = old.train_member(1, old.shard_data(1, kept, old.user_shards(kept)), None, False)
    assert same_parameters(fresh, new.members[1])
    # the user's events are gone from the new directory, the popularity fallback with them
    saved = Dataset.load(tmp_path / "v2" / "dataset")
    assert user not in saved.user_ids.cast(pl.Utf8).to_list()
    before = old.fitted_dataset()
    their_items = before.histories[int(before.encode_users([int(user)])[0])]
    expected = before.item_popularity - np.bincount(their_items, minlength=before.n_items)
    np.testing.assert_array_equal(saved.item_popularity, expected)
    assert saved.n_events == before.n_events - len(their_items) == kept.n_events
    # the manifest: lineage, the forget's counts, never the id
    manifest = read_manifest(tmp_path / "v2")
    assert manifest["parent"]["model_dir"] == str(base_dir.resolve())
    assert manifest["lineage"] == [model_version(base_dir)]
    assert manifest["forget"]["users"] == 1 and manifest["forget"]["retrained_shards"] == [1]
    assert "test" not in manifest and manifest["cutoff"] == read_manifest(base_dir)["cutoff"]
    assert set(manifest["forget"]) == {
        "users",
        "events",
        "retrained_shards",
        "shards",
        "train_seconds",
    }  # counts, no ids
    assert base_dir.is_dir()  # keep_old


def test_retrain_settings_follow_how_each_member_was_trained() -> None:
    fields = {"epochs": None}
    members = {"members": [{"best_valid": {"NDCG@10": 0.1}, "best_epoch": 4}, {"epochs": 7}]}
    assert member_settings({"fit_info": members}, 0, fields) == {"epochs": 4}
    assert member_settings({"fit_info": members}, 1, fields) == {"epochs": 7}
    assert member_settings({"fit_info": members, "refit": {}}, 0, fields) == {}
    assert member_settings({"fit_info": members}, 0, {"alpha": None}) == {}


def test_a_model_without_shards_is_retrained_whole(
    data: Dataset, tmp_path: Path, one_torch_thread: None
) -> None:
    model = get_model_class("ease")({"l2": 10.0}).fit(data)
    model.save(tmp_path / "ease")
    user = str(data.user_ids[0])
    result = forget(tmp_path / "ease", [user])
    assert result.retrained == [0] and result.shards == 1
    assert result.out == tmp_path / "ease-forget-1" and not (tmp_path / "ease").exists()
    kept, _ = drop_erased(data, [user])
    expected = get_model_class("ease")({"l2": 10.0}).fit(kept)
    np.testing.assert_allclose(
        evorec.load_model(result.out).item_vectors(), expected.item_vectors(), rtol=1e-6
    )
    with pytest.raises(NothingToForget, match="nothing to forget"):
        forget(result.out, [user])


def test_the_erasure_log_keeps_digests_and_an_old_store_migrates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        version_table.create(conn)
        conn.execute(version_table.insert().values(version=3))
        for step in MIGRATIONS[:3]:
            step(conn)
        conn.execute(erased_table.insert().values(user_id="erased-7", erased_at=5))
    engine.dispose()
    store = EventStore(url)
    assert store.erased_users() == {erasure_digest(store.store_id, "erased-7"): 5}
    assert store.erased_among(["1", "erased-7"]) == ["erased-7"]
    store.close()


# -- the command line --------------------------------------------------------------------


def evorec_cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "evorec.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_the_cli_forgets_through_a_link_erasing_from_the_store(
    base_dir: Path, tmp_path: Path
) -> None:
    versions = tmp_path / "models"
    versions.mkdir()
    model = evorec.load_model(base_dir)
    model.save(versions / "v1")
    link = versions / "current"
    point(link, versions / "v1")
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    store.import_dataset(model.fitted_dataset())
    user = str(model.fitted_dataset().user_ids[3])
    store.close()

    done = evorec_cli(
        "forget", "--model-dir", link, "--user", user, "--db", f"sqlite:///{tmp_path / 'events.db'}"
    )
    assert done.returncode == 0, done.stderr
    assert "forgot 1 users" in done.stdout and "removed old version" in done.stdout
    assert link.resolve() == (versions / "v1-forget-1").resolve()
    assert not (versions / "v1").exists()
    assert user not in Dataset.load(link / "dataset").user_ids.cast(pl.Utf8).to_list()
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    assert not store.has_user(user) and store.erased_among([user]) == [user]
    store.close()

    again = evorec_cli("forget", "--model-dir", link, "--user", user)
    assert again.returncode == 1
    assert again.stderr.strip().startswith("error:") and "nothing to forget" in again.stderr
    assert "Traceback" not in again.stderr


def test_serving_with_forget_on_delete_forgets_an_erased_user_from_the_served_model(
    base_dir: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from evorec.serving import Service, create_app
    from evorec.serving.forgetting import forgetting

    versions = tmp_path / "models"
    evorec.load_model(base_dir).save(versions / "v1")
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    service = Service(versions / "v1", store, forget_on_delete=True)
    client = TestClient(create_app(service))
    user = str(service.current.dataset.user_ids[5])
    before = service.current.version

    erased = client.delete(f"/users/{user}")
    assert erased.status_code == 200 and erased.json()["forgetting"] is True
    thread = forgetting(service)._thread
    assert thread is not None
    thread.join(timeout=600)
    status = client.get("/admin/forget/status").json()
    assert status["state"] == "idle" and status["pending_users"] == 0, status
    assert status["forgotten_users"] == 1
    assert service.current.version != before
    assert user not in service.current.dataset.user_ids.cast(pl.Utf8).to_list()
    assert not (versions / "v1").exists()  # the version that held the user is gone
    assert client.get(f"/users/{user}/recommendations").status_code == 404
    store.close()


def test_without_forget_on_delete_an_erasure_leaves_the_model_to_admin_forget(
    base_dir: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from evorec.serving import Service, create_app

    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    service = Service(base_dir, store)
    client = TestClient(create_app(service))
    user = str(service.current.dataset.user_ids[5])
    erased = client.delete(f"/users/{user}")
    assert erased.status_code == 200 and erased.json()["forgetting"] is False
    assert client.get("/admin/forget/status").json()["pending_users"] == 1
    store.close()


def test_forget_on_delete_is_refused_with_several_workers(base_dir: Path, tmp_path: Path) -> None:
    done = evorec_cli(
        "serve", "--model-dir", base_dir, "--db", f"sqlite:///{tmp_path / 'e.db'}",
        "--workers", "2", "--forget-on-delete", "--port", "0",
    )  # fmt: skip
    assert done.returncode == 1 and "--forget-on-delete" in done.stderr
    assert "Traceback" not in done.stderr


# -- membership inference ----------------------------------------------------------------


def test_the_attack_auc_counts_ties_half() -> None:
    assert attack_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert attack_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert attack_auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    assert attack_auc(np.array([2.0, 0.0]), np.array([1.0, 2.0])) == pytest.approx(0.375)


def test_membership_tells_memorised_users_from_strangers() -> None:
    # members' histories are what an EASE model with almost no regularisation memorises;
    # strangers have histories of the same make the model never saw
    rng = np.random.default_rng(0)
    n_items = 120

    def histories(n: int) -> Histories:
        return Histories.from_lists([rng.choice(n_items, 12, replace=False) for _ in range(n)])

    members, strangers, others = histories(60), histories(60), histories(60)
    rows = [[(u, int(i), t) for t, i in enumerate(members[u])] for u in range(len(members))]
    frame = pl.DataFrame(
        [e for r in rows for e in r], schema=["user_id", "item_id", "timestamp"], orient="row"
    )
    dataset = evorec.from_frame(
        frame.vstack(_catalogue(n_items)),
        preprocess_config={"min_user_events": 1, "min_item_events": 1},
    )
    model = get_model_class("ease")({"l2": 1.0}).fit(dataset)
    encode = dataset.encode_items

    def as_ids(h: Histories) -> Histories:
        return Histories.from_lists([encode(row) for row in h.to_lists()])

    seen = membership_auc(model, as_ids(members), as_ids(strangers))
    assert seen.auc > 0.9 and seen.member_mean > seen.nonmember_mean
    unseen = membership_auc(model, as_ids(others), as_ids(strangers))
    assert abs(unseen.auc - 0.5) < 0.15
    ranks = membership_scores(model, as_ids(members), events=5, signal="rank")
    assert ranks.shape == (60,) and (ranks <= 0).all()


def _catalogue(n_items: int) -> pl.DataFrame:
    """One catalogue user taking every item once, so that every item has an id."""
    items = list(range(n_items))
    return pl.DataFrame({"user_id": [-1] * n_items, "item_id": items, "timestamp": items})


# -- the service's erasure path and every file it leaves ---------------------------------

DISTINCT = "erase-me-5f3c9a71"  # an id no other text in these files contains


def files_naming(root: Path, text: str) -> list[str]:
    """Every file under ``root`` holding ``text``: in its bytes, or (Parquet, which may
    compress) in any value of its columns."""
    found = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        if text.encode() in file.read_bytes():
            found.append(str(file))
        elif file.suffix == ".parquet":
            frame = pl.read_parquet(file)
            for column in frame.columns:
                values = frame[column]
                if isinstance(values.dtype, pl.List):
                    values = values.explode()
                strings = values.cast(pl.Utf8, strict=False)
                if strings.str.contains(text, literal=True).any():
                    found.append(f"{file}:{column}")
    return found


def test_an_erased_user_leaves_no_trace_in_any_file_the_service_and_update_write(
    data: Dataset, tmp_path: Path, one_torch_thread: None
) -> None:
    import httpx

    from evorec.serving.server import running_server

    # a SASRec (what `update` fine-tunes) trained with the distinctive user among its users
    renamed = pl.Series([DISTINCT, *data.user_ids.cast(pl.Utf8).to_list()[1:]])
    frame = pl.DataFrame(
        {
            "user_id": renamed.gather(data.events["user_idx"]),
            "item_id": data.item_ids.gather(data.events["item_idx"]),
            "timestamp": data.events["timestamp"],
        }
    )
    dataset = evorec.from_frame(frame, preprocess_config={"min_user_events": 1})
    models, logs = tmp_path / "models", tmp_path / "logs"
    logs.mkdir()
    sasrec = {"name": "sasrec", **SETTINGS, "epochs": 2}
    train(RunConfig(model=sasrec), models / "v1", dataset=dataset)
    link = models / "current"
    point(link, models / "v1")
    url = f"sqlite:///{tmp_path / 'store' / 'events.db'}"

    options = ("--watch", "--watch-interval", "0.2")
    with running_server(link, url, *options, log=logs / "serve.log") as server:
        client = httpx.Client(base_url=server.url, timeout=60)
        top = int(dataset.events["timestamp"].max())
        live = {"user_id": DISTINCT, "item_id": str(dataset.item_ids[0]), "timestamp": top + 1}
        assert client.post("/events", json=live).status_code == 201
        assert client.get(f"/users/{DISTINCT}/recommendations").status_code == 200
        # the search finds the id where it is: the store and the model's dataset
        assert files_naming(tmp_path / "store", DISTINCT)
        assert files_naming(models / "v1", DISTINCT)
        before = client.get("/health").json()["model_version"]

        assert client.delete(f"/users/{DISTINCT}").status_code == 200
        started = client.post("/admin/forget")
        assert started.status_code == 202 and started.json()["pending_users"] in (0, 1)
        for _ in range(600):
            status = client.get("/admin/forget/status").json()
            if status["state"] != "running":
                break
            time.sleep(0.2)
        assert status["state"] == "idle" and status["pending_users"] == 0, status
        assert status["forgotten_users"] == 1
        assert client.get("/health").json()["model_version"] != before
        assert client.get(f"/users/{DISTINCT}/recommendations").status_code == 404
        other = {"user_id": "late-user", "item_id": str(dataset.item_ids[1]), "timestamp": top + 2}
        later = [other, {**other, "item_id": str(dataset.item_ids[2]), "timestamp": top + 3}]
        assert client.post("/events", json=later).status_code == 201

    updated = evorec_cli(
        "update",
        "--model-dir",
        link,
        "--out",
        models / "v3",
        "--db",
        url,
        "--link",
        link,
        "--epochs",
        "1",
        "--quiet",
    )
    (logs / "update.log").write_text(updated.stdout + updated.stderr)
    assert updated.returncode == 0, updated.stderr
    assert link.resolve() == (models / "v3").resolve() and not (models / "v1").exists()
    assert files_naming(tmp_path, DISTINCT) == []
