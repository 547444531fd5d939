"""The REST service end to end on a small real model.

The model is SASRec trained on simulated users whose interests are topic mixtures (the demo's
simulator): the topic of every item is known (the item table's ``topic`` column), so the
freshness test can check that recommendations turn to a topic a user starts to follow.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import fresh_postgres, retrained_copy
from fastapi.testclient import TestClient

import evorec
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.serving import Service, create_app
from evorec.serving.server import running_server
from evorec.store import EventStore

N_TOPICS = 8
KEY = "s3cret"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a busy machine
    sim = simulate(n_users=600, n_items=300, n_topics=N_TOPICS, seed=1)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    model = evorec.SASRec(epochs=15, dim=32, max_len=30, lr=0.005, device="cpu").fit(data)
    torch.set_num_threads(threads)
    return model.save(tmp_path_factory.mktemp("serving") / "sim-sasrec")


@pytest.fixture
def service(model_dir: Path, tmp_path: Path) -> Iterator[Service]:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    yield Service(model_dir, store)
    store.close()


@pytest.fixture
def client(service: Service) -> TestClient:
    return TestClient(create_app(service))


def topics(service: Service) -> dict[object, int]:
    items = service.current.dataset.items
    assert items is not None
    return dict(zip(items["item_id"].to_list(), items["topic"].to_list(), strict=True))


def recommended(client: TestClient, user: object, **params: object) -> list[object]:
    response = client.get(f"/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def test_known_users_are_served_from_their_seeded_history(
    service: Service, client: TestClient
) -> None:
    dataset = service.current.dataset
    assert service.seeded == dataset.n_events == service.store.count()
    user = dataset.user_ids[0]
    seen = set(dataset.item_ids.gather(dataset.histories[0]).to_list())

    body = client.get(f"/users/{user}/recommendations", params={"k": 7}).json()
    assert body["model_version"] == service.current.version
    assert body["model_version"].startswith("sim-sasrec-")
    assert body["source"] == "model"
    assert [item["rank"] for item in body["items"]] == list(range(1, 8))
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert not seen & {item["item_id"] for item in body["items"]}

    # without filtering, the ranking is the model's own over every item
    expected = service.current.model.recommend([user], k=7, filter_seen=False)
    assert recommended(client, user, k=7, exclude_seen=False) == expected["item_id"].to_list()

    history = client.get(f"/users/{user}/history").json()
    assert [e["item_id"] for e in history["events"]] == dataset.item_ids.gather(
        dataset.histories[0]
    ).to_list()


def test_recommendations_follow_events_posted_a_moment_ago(
    service: Service, client: TestClient
) -> None:
    topic_of = topics(service)
    dataset = service.current.dataset
    moved = 0
    for user in dataset.user_ids[:4].to_list():
        before = [topic_of[i] for i in recommended(client, user)]
        new = int(np.argmin(np.bincount(before, minlength=N_TOPICS)))  # its rarest topic
        posted = [item for item, topic in topic_of.items() if topic == new][:15]
        events = [{"user_id": user, "item_id": item} for item in posted]
        assert client.post("/events", json=events).json() == {"ingested": 15, "replayed": False}
        after = [topic_of[i] for i in recommended(client, user)]
        assert before.count(new) <= 2
        moved += after.count(new) >= 7
        assert not set(posted) & set(recommended(client, user, k=50))
    assert moved >= 3, "recommendations did not turn to the newly followed topic"


def test_a_new_user_known_only_to_the_store_gets_recommendations(
    service: Service, client: TestClient
) -> None:
    topic_of = topics(service)
    items = [item for item, topic in topic_of.items() if topic == 3][:10]
    assert client.get("/users/newcomer/recommendations").status_code == 404
    one = {"user_id": "newcomer", "item_id": items[0], "timestamp": 100, "behavior": "click"}
    assert client.post("/events", json=one).status_code == 201
    client.post("/events", json=[{"user_id": "newcomer", "item_id": i} for i in items[1:]])
    body = client.get("/users/newcomer/recommendations").json()
    assert body["source"] == "model" and len(body["items"]) == 10
    history = client.get("/users/newcomer/history").json()["events"]
    assert history[0] == {"item_id": items[0], "timestamp": 100, "behavior": "click", "value": None}

    # nothing the model knows: the most popular items
    client.post("/events", json={"user_id": "stranger", "item_id": "never-seen"})
    body = client.get("/users/stranger/recommendations", params={"k": 5}).json()
    popularity = service.current.dataset.item_popularity
    top = service.current.dataset.item_ids.gather(np.argsort(-popularity, kind="stable")[:5])
    assert body["source"] == "popularity"
    assert [i["item_id"] for i in body["items"]] == top.to_list()
    history = client.get("/users/stranger/history").json()["events"]
    assert history[0]["item_id"] == "never-seen"


def test_allow_deny_and_attribute_filters(service: Service, client: TestClient) -> None:
    topic_of = topics(service)
    user = service.current.dataset.user_ids[5]
    free = recommended(client, user, k=5)

    denied = recommended(client, user, k=5, deny=[free[0], free[1]])
    assert denied[:3] == free[2:]
    allowed = [item for item in topic_of if item not in free][:4]
    assert set(recommended(client, user, k=10, allow=[*allowed, "unknown-item"])) <= set(allowed)
    for topic in (2, 6):
        picked = recommended(client, user, k=10, **{"attr.topic": topic})
        assert picked and {topic_of[item] for item in picked} == {topic}

    for params, message in [
        ({"attr.colour": "red"}, "no item attribute 'colour'"),
        ({"attr.topic": "many"}, "attr.topic"),
    ]:
        response = client.get(f"/users/{user}/recommendations", params=params)
        assert response.status_code == 422
        assert message in response.json()["detail"][0]["msg"]


def test_raw_history_recommendations_match_the_model(service: Service, client: TestClient) -> None:
    model = service.current.model
    history = service.current.dataset.item_ids[:6].to_list()
    body = client.post("/recommendations", json={"items": history, "k": 5}).json()
    assert body["user_id"] is None and body["source"] == "model"
    expected = model.recommend(histories=[history], k=5)["item_id"].to_list()
    assert [item["item_id"] for item in body["items"]] == expected

    body = client.post("/recommendations", json={"items": ["nope"], "k": 3}).json()
    assert body["source"] == "popularity" and len(body["items"]) == 3
    bad = client.post("/recommendations", json={"items": history, "timestamps": [1]})
    assert bad.status_code == 422


def test_similar_items(service: Service, client: TestClient) -> None:
    topic_of = topics(service)
    item = service.current.dataset.item_ids[10]
    body = client.get(f"/items/{item}/similar", params={"k": 10}).json()
    similar = [i["item_id"] for i in body["items"]]
    assert len(similar) == 10 and item not in similar
    # item vectors group items by topic
    assert sum(topic_of[i] == topic_of[item] for i in similar) >= 6
    assert client.get("/items/no-such-item/similar").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/users/ghost/recommendations", None),
        ("get", "/users/ghost/history", None),
        ("delete", "/users/ghost", None),
        ("get", "/items/ghost/similar", None),
    ],
)
def test_unknown_ids_are_404_with_a_json_error(
    client: TestClient, method: str, path: str, body: object
) -> None:
    response = client.request(method.upper(), path, json=body)
    assert response.status_code == 404
    assert "ghost" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"item_id": "a"},
        {"user_id": "u", "item_id": "a", "extra": 1},
        {"user_id": 1.5, "item_id": "a"},
        {"user_id": "", "item_id": "a"},
        {"user_id": "u", "item_id": "a", "timestamp": "noon"},
        {"user_id": "u", "item_id": "a", "timestamp": -1},
        {"user_id": "u", "item_id": "a", "value": "NaN"},
        [],
        "text",
    ],
)
def test_invalid_event_bodies_are_422_and_store_nothing(
    service: Service, client: TestClient, body: object
) -> None:
    before = service.store.count()
    response = client.post("/events", json=body)
    assert response.status_code == 422
    assert service.store.count() == before


def test_invalid_query_values_are_422(client: TestClient, service: Service) -> None:
    user = service.current.dataset.user_ids[0]
    for params in ({"k": 0}, {"k": 100_000}, {"k": "ten"}, {"exclude_seen": "maybe"}):
        assert client.get(f"/users/{user}/recommendations", params=params).status_code == 422
    response = client.post(
        "/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"].startswith("invalid JSON: Expecting")


def test_delete_user_forgets_them(service: Service, client: TestClient) -> None:
    user = service.current.dataset.user_ids[2]
    count = int(service.current.dataset.histories.lengths[2])
    client.post("/events", json={"user_id": user, "item_id": "fresh"})
    erased = client.delete(f"/users/{user}").json()
    assert erased == {"user_id": str(user), "deleted": count + 1, "forgetting": False}
    assert not service.store.has_user(str(user))
    assert client.get(f"/users/{user}/recommendations").status_code == 404
    assert client.get(f"/users/{user}/history").status_code == 404
    assert client.delete(f"/users/{user}").status_code == 404


def test_write_and_admin_calls_need_the_api_key(model_dir: Path, tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    client = TestClient(create_app(Service(model_dir, store, api_key=KEY)))
    event = {"user_id": "u", "item_id": "i"}
    for headers in ({}, {"X-API-Key": "wrong"}):
        assert client.post("/events", json=event, headers=headers).status_code == 401
        assert client.delete("/users/u", headers=headers).status_code == 401
        assert client.post("/admin/reload", headers=headers).status_code == 401
    assert not store.has_user("u")
    good = {"X-API-Key": KEY}
    assert client.post("/events", json=event, headers=good).status_code == 201
    assert client.get("/users/u/recommendations").status_code == 200  # reads are open
    assert client.delete("/users/u", headers=good).status_code == 200
    assert client.post("/admin/reload", headers=good).status_code == 200
    store.close()


def test_reload_swaps_models_while_requests_run(model_dir: Path, tmp_path: Path) -> None:
    # reloads load from the served directory's parent: both versions live there
    served = tmp_path / "models" / "sim-sasrec"
    shutil.copytree(model_dir, served)
    retrained = retrained_copy(served, tmp_path / "models" / "sim-sasrec-v2")
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    service = Service(served, store)
    client = TestClient(create_app(service))
    old = service.current.version
    user = service.current.dataset.user_ids[0]
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = client.get(f"/users/{user}/recommendations")
            statuses.append(response.status_code)
            versions.add(response.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for target in (retrained, served, retrained):
            body = client.post("/admin/reload", json={"model_dir": str(target)}).json()
            assert body["model_version"] != body["previous_version"]
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    new = service.current.version
    assert new.startswith("sim-sasrec-v2-") and new != old
    assert statuses and set(statuses) == {200}
    assert versions <= {old, new}

    missing = str(tmp_path / "models" / "missing")
    broken = client.post("/admin/reload", json={"model_dir": missing})
    assert broken.status_code == 422
    assert broken.json()["detail"] == [
        {
            "loc": ["body", "model_dir"],
            "msg": f"{missing}: model directory not found",
            "type": "value_error",
        }
    ]
    assert client.get("/health").json() == {
        "status": "ok",
        "model_version": new,
        "model_update": "ok",
        "model_update_error": None,
    }
    assert f'evorec_model_info{{version="{new}"}} 1.0' in client.get("/metrics").text
    store.close()


def test_metrics_count_requests_and_ingested_events(service: Service, client: TestClient) -> None:
    user = service.current.dataset.user_ids[0]
    recommended(client, user)
    recommended(client, user)
    client.get("/users/ghost/recommendations")
    client.post("/events", json=[{"user_id": "m", "item_id": "x"}] * 3)
    text = client.get("/metrics").text
    route = 'route="/users/{user_id}/recommendations"'
    assert f'evorec_http_requests_total{{method="GET",{route},status="200"}} 2.0' in text
    assert f'evorec_http_requests_total{{method="GET",{route},status="404"}} 1.0' in text
    assert f'evorec_http_request_duration_seconds_count{{method="GET",{route}}} 3.0' in text
    assert "evorec_events_ingested_total 3.0" in text
    assert f'evorec_model_info{{version="{service.current.version}"}} 1.0' in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/events", "/users/{user_id}/recommendations", "/admin/reload"} <= set(paths)


# -- the real server -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "round_"),
    [*(("sqlite", n) for n in range(5)), ("postgresql", 0)],
    ids=[*(f"sqlite-{n}" for n in range(5)), "postgresql"],
)
def test_acknowledged_events_survive_a_killed_server_exactly_once(
    model_dir: Path, tmp_path: Path, backend: str, round_: int
) -> None:
    """SIGKILL in the middle of an event stream, five times on SQLite and once on
    PostgreSQL: every acknowledged event is stored, none twice."""
    db = fresh_postgres() if backend == "postgresql" else f"sqlite:///{tmp_path / 'events.db'}"
    acknowledged: list[tuple[str, str, int]] = []
    sent = 0
    with running_server(model_dir, db) as server:
        process = server.process
        killer = threading.Timer(1.5, os.kill, (process.pid, signal.SIGKILL))
        killer.start()
        try:
            with httpx.Client(base_url=server.url, timeout=5) as http:
                while process.poll() is None or sent == 0:
                    batch = [
                        (f"crash-{sent % 7}", f"item-{sent}-{n}", sent * 10 + n) for n in range(5)
                    ]
                    sent += 1
                    body = [{"user_id": u, "item_id": i, "timestamp": t} for u, i, t in batch]
                    try:
                        response = http.post("/events", json=body)
                    except httpx.TransportError:
                        break  # the server died with this request in flight
                    assert response.status_code == 201
                    acknowledged += batch
        finally:
            killer.cancel()
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL and len(acknowledged) >= 25

    # restarts on the same store, no reseeding
    with running_server(model_dir, db, port=server.port):
        store = EventStore(db)
        stored = store.events().filter(store.events()["user_id"].str.starts_with("crash-"))
        keys = list(zip(stored["user_id"], stored["item_id"], stored["timestamp"], strict=True))
        assert len(keys) == len(set(keys)), "an event was stored twice"
        assert set(acknowledged) <= set(keys), "an acknowledged event was lost"
        assert len(keys) <= 5 * sent
        seeded = store.count() - len(keys)
        assert seeded == evorec.load_model(model_dir).dataset.n_events
        store.close()


def test_serve_reports_a_bad_model_dir_in_one_line(run, tmp_path: Path) -> None:
    result = run("serve", "--model-dir", tmp_path / "nothing", "--port", "0")
    assert result.code == 1
    assert result.err.startswith("error: ") and "model directory not found" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_reload_is_refused_when_several_workers_serve(model_dir: Path, tmp_path: Path) -> None:
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    client = TestClient(create_app(Service(model_dir, store, workers=2)))
    response = client.post("/admin/reload")
    assert response.status_code == 409 and "--watch" in response.json()["detail"]
    store.close()


def test_reload_re_points_the_watched_link(model_dir: Path, tmp_path: Path) -> None:
    from evorec.modeldir import point

    link = tmp_path / "current"
    point(link, model_dir)
    retrained = retrained_copy(model_dir, tmp_path / "v2")
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    client = TestClient(create_app(Service(link, store, workers=2, watched_link=link)))
    assert client.post("/admin/reload", json={"model_dir": str(retrained)}).status_code == 200
    assert link.resolve() == retrained.resolve()
    broken = client.post("/admin/reload", json={"model_dir": str(tmp_path / "missing")})
    assert broken.status_code == 422 and link.resolve() == retrained.resolve()
    store.close()


def test_workers_share_the_store_sum_their_metrics_and_all_follow_the_watched_link(
    model_dir: Path, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from evorec.modeldir import point
    from evorec.serving.engine import model_version

    retrained = retrained_copy(model_dir, tmp_path / "v2")
    link = tmp_path / "current"
    point(link, model_dir)
    old, new = model_version(model_dir), model_version(retrained)
    user = evorec.load_model(model_dir).dataset.user_ids[0]
    db = f"sqlite:///{tmp_path / 'events.db'}"
    options = ("--watch", "--watch-interval", "0.2")

    def get(path: str) -> httpx.Response:
        # a new connection: any worker may answer
        return httpx.get(server.url + path, timeout=30)

    def workers_of(responses: list[httpx.Response]) -> set[str]:
        assert {r.status_code for r in responses} == {200}
        return {r.headers["x-evorec-worker"] for r in responses}

    with running_server(link, db, *options, workers=2) as server, ThreadPoolExecutor(8) as pool:
        url = server.url
        # both workers answer once both have loaded the model
        deadline = time.monotonic() + 120
        while len(workers_of(list(pool.map(get, ["/health"] * 16)))) < 2:
            assert time.monotonic() < deadline, "one worker answered every request"
        # a write through one worker is read through any other
        for n in range(10):
            body = {"user_id": "multi", "item_id": f"item-{n}", "timestamp": n}
            assert httpx.post(url + "/events", json=body).status_code == 201
            reads = list(pool.map(get, ["/users/multi/history"] * 8))
            assert {len(r.json()["events"]) for r in reads} == {n + 1}
        recs = list(pool.map(get, [f"/users/{user}/recommendations"] * 40))
        assert len(workers_of(recs)) == 2
        # counted by whichever worker answered, summed over both
        text = get("/metrics").text
        route = 'route="/users/{user_id}/recommendations"'
        assert f'evorec_http_requests_total{{method="GET",{route},status="200"}} 40.0' in text
        assert "evorec_events_ingested_total 10.0" in text
        # the reload swaps in one worker and re-points the link for the others
        reload = httpx.post(url + "/admin/reload", json={"model_dir": str(retrained)})
        assert reload.json() == {"model_version": new, "previous_version": old}
        assert link.resolve() == retrained.resolve()
        # every worker swapped once the old version is served by none
        deadline = time.monotonic() + 120
        while f'evorec_model_info{{version="{old}"}} 0.0' not in get("/metrics").text:
            assert time.monotonic() < deadline, "a worker kept the old model"
            time.sleep(0.2)
        recs = list(pool.map(get, [f"/users/{user}/recommendations"] * 20))
        assert {r.json()["model_version"] for r in recs} == {new}
        assert f'evorec_model_info{{version="{new}"}} 1.0' in get("/metrics").text
