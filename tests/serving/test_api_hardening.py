"""The REST service against bad input, heavy users and untrusted requests: one regression
test per finding of the hardening review (bodies, numbers, strings, types, reload, forms,
idempotency, paging, a heavy user)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from fastapi.testclient import TestClient

import evorec
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.serving import Service, create_app
from evorec.serving.schemas import MAX_BATCH
from evorec.serving.server import running_app, running_server
from evorec.serving.service import MAX_BODY_BYTES
from evorec.store import EventStore

KEY = "s3cret"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sim = simulate(n_users=200, n_items=120, n_topics=4, seed=3)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    model = evorec.SASRec(epochs=2, dim=16, max_len=20, device="cpu").fit(data)
    torch.set_num_threads(threads)
    return model.save(tmp_path_factory.mktemp("hardening") / "trained")


@pytest.fixture
def model_dir(trained: Path, tmp_path: Path) -> Path:
    """The model in a models root of its own: ``tmp_path/models``."""
    target = tmp_path / "models" / "sim"
    shutil.copytree(trained, target)
    return target


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    opened = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    yield opened
    opened.close()


@pytest.fixture
def service(model_dir: Path, store: EventStore) -> Service:
    return Service(model_dir, store)


@pytest.fixture
def client(service: Service) -> TestClient:
    return TestClient(create_app(service))


def post_json(client: TestClient, path: str, raw: bytes, **headers: str) -> httpx.Response:
    return client.post(path, content=raw, headers={**JSON, **headers})


def errors(response: httpx.Response) -> list[dict[str, object]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail", "errors"}
    for error in body["detail"]:
        assert set(error) == {"loc", "msg", "type"}  # never the input
    return body["detail"]


# -- body size ----------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(model_dir: Path, store: EventStore) -> None:
    client = TestClient(create_app(Service(model_dir, store, max_body_bytes=50_000)))
    big = b'{"items": [' + b'"item",' * 20_000 + b'"last"]}'
    declared = post_json(client, "/recommendations", big)

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused once past the limit
        for _ in range(1_000):
            yield b" " * 1_000

    streamed = client.post("/recommendations", content=chunks(), headers=JSON)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json() == {"detail": "request body over the limit of 50,000 bytes"}
    assert 'status="413"} 1.0' in client.get("/metrics").text


def test_the_default_limit_takes_a_full_batch_of_events(client: TestClient) -> None:
    batch = [
        {"user_id": f"user-{n % 97:0>40}", "item_id": f"item-{n:0>60}", "timestamp": n}
        for n in range(MAX_BATCH)
    ]
    response = client.post("/events", json=batch)
    assert response.status_code == 201 and response.json()["ingested"] == MAX_BATCH
    assert len(response.request.content) < MAX_BODY_BYTES


# -- validation replies -------------------------------------------------------------------


def test_an_oversized_batch_names_the_batch_limit_and_echoes_nothing(
    client: TestClient, store: EventStore
) -> None:
    before = store.count()
    events = [{"user_id": "u", "item_id": f"i{n}"} for n in range(100_000)]
    response = client.post("/events", json=events)
    assert errors(response) == [
        {
            "loc": ["body"],
            "msg": "a batch holds at most 10,000 events, this one 100,000: "
            "post it in several requests",
            "type": "too_long",
        }
    ]
    assert len(response.content) < 500 and store.count() == before


def test_a_reply_lists_at_most_20_errors_and_counts_them_all(client: TestClient) -> None:
    response = client.post("/events", json=[{"user_id": "u"}] * 100)
    listed = errors(response)
    assert response.json()["errors"] == 100 and len(listed) == 20
    assert listed[0] == {"loc": ["body", 0, "item_id"], "msg": "Field required", "type": "missing"}


def test_long_values_are_not_echoed(client: TestClient) -> None:
    secret = "s" * 100_000
    for response in (
        client.post("/events", json={"user_id": secret, "item_id": "a"}),
        client.post("/recommendations", json={"items": [], "attributes": {secret: "x"}}),
        client.post("/recommendations", json={"items": [], secret: 1}),
    ):
        assert secret[:300] not in response.text and len(response.content) < 1_000
        errors(response)


# -- numbers and strings ------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309"])
@pytest.mark.parametrize(
    ("path", "template", "loc"),
    [
        ("/events", '{"user_id": "u", "item_id": "a", "value": %s}', ["body", "value"]),
        (
            "/events",
            '[{"user_id": "u", "item_id": "a", "timestamp": %s}]',
            ["body", 0, "timestamp"],
        ),
        ("/events", '{"user_id": %s, "item_id": "a"}', ["body", "user_id"]),
        ("/recommendations", '{"items": [1, %s]}', ["body", "items", 1]),
        ("/recommendations", '{"items": [], "k": %s}', ["body", "k"]),
        ("/admin/reload", '{"model_dir": %s}', ["body", "model_dir"]),
    ],
)
def test_non_finite_numbers_are_422_naming_the_field(
    client: TestClient, store: EventStore, literal: str, path: str, template: str, loc: list[object]
) -> None:
    before = store.count()
    (error,) = errors(post_json(client, path, (template % literal).encode()))
    assert error["loc"] == loc and error["type"] == "json_invalid"
    assert store.count() == before


def test_lone_surrogates_duplicate_keys_and_broken_json_are_422(client: TestClient) -> None:
    cases = [
        (rb'{"user_id": "\ud800", "item_id": "a"}', ["body", "user_id"], "lone UTF-16 surrogate"),
        (rb'[{"user_id": "u", "item_id": "x\udfffy"}]', ["body", 0, "item_id"], "surrogate"),
        (rb'{"user_id": "u", "item_id": "a", "item_id": "b"}', ["body"], "duplicate key"),
        (b'{"user_id": "u", "item_id": "\xff"}', ["body"], "not UTF-8"),
        (b"[" * 100_000, ["body"], "nested too deeply"),
        (b'{"user_id": 1' + b"0" * 5_000 + b', "item_id": "a"}', ["body"], "too many digits"),
        (b'{"user_id": "u",', ["body"], "invalid JSON"),
    ]
    for raw, loc, message in cases:
        (error,) = errors(post_json(client, "/events", raw))
        assert error["loc"] == loc and message in error["msg"], error
    # a surrogate pair is one character, not a lone surrogate
    paired = post_json(client, "/events", rb'{"user_id": "\ud83d\ude00", "item_id": "a"}')
    assert paired.status_code == 201
    assert client.get("/users/\U0001f600/history").json()["events"][0]["item_id"] == "a"


@pytest.mark.parametrize("stamp", [2**63, 2**64, 10**30, 2**53, -1])
def test_timestamps_beyond_what_the_store_holds_are_422(
    client: TestClient, store: EventStore, stamp: int
) -> None:
    before = store.count()
    event = {"user_id": "u", "item_id": "a", "timestamp": stamp}
    (error,) = errors(client.post("/events", json=event))
    assert error["loc"] == ["body", "timestamp"]
    history = {"items": ["a", "b"], "timestamps": [1, stamp]}
    (error,) = errors(client.post("/recommendations", json=history))
    assert error["loc"] == ["body", "timestamps", 1]
    assert store.count() == before


def test_a_long_or_nul_reload_path_is_422(client: TestClient, service: Service) -> None:
    version = service.current.version
    for model_dir in ("x" * 10_000, "runs/a\x00b"):
        (error,) = errors(client.post("/admin/reload", json={"model_dir": model_dir}))
        assert error["loc"] == ["body", "model_dir"]
    assert service.current.version == version


# -- strict types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/events", {"user_id": "u", "item_id": "a", "timestamp": True}, ["body", "timestamp"]),
        ("/events", {"user_id": "u", "item_id": "a", "timestamp": "123"}, ["body", "timestamp"]),
        ("/events", {"user_id": "u", "item_id": "a", "timestamp": 1.5}, ["body", "timestamp"]),
        ("/events", {"user_id": "u", "item_id": "a", "value": False}, ["body", "value"]),
        ("/events", {"user_id": "u", "item_id": "a", "value": "1.5"}, ["body", "value"]),
        ("/events", {"user_id": True, "item_id": "a"}, ["body", "user_id"]),
        ("/events", {"user_id": "u", "item_id": "a", "behavior": 3}, ["body", "behavior"]),
        ("/events", {"user_id": "u\x00v", "item_id": "a"}, ["body", "user_id"]),
        ("/events", {"user_id": 2**53, "item_id": "a"}, ["body", "user_id"]),
        ("/recommendations", {"items": [], "k": "5"}, ["body", "k"]),
        ("/recommendations", {"items": [], "exclude_seen": "yes"}, ["body", "exclude_seen"]),
        ("/recommendations", {"items": [], "exclude_seen": 1}, ["body", "exclude_seen"]),
    ],
)
def test_values_of_the_wrong_type_are_refused_not_coerced(
    client: TestClient, store: EventStore, path: str, body: object, loc: list[object]
) -> None:
    before = store.count()
    (error,) = errors(client.post(path, json=body))
    assert error["loc"] == loc
    assert store.count() == before


def test_integer_values_and_ids_are_accepted(client: TestClient) -> None:
    event = {"user_id": 10**12, "item_id": "a", "timestamp": 5.0, "value": 2}
    assert client.post("/events", json=event).status_code == 201
    assert client.get(f"/users/{10**12}/history").json()["events"] == [
        {"item_id": "a", "timestamp": 5, "behavior": None, "value": 2.0}
    ]


# -- reload -------------------------------------------------------------------------------


def test_reload_loads_only_under_the_models_root(
    client: TestClient, service: Service, model_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "sim"
    shutil.copytree(model_dir, outside)
    (model_dir.parent / "escape").symlink_to(outside)
    version = service.current.version
    for target in (outside, model_dir.parent / "escape", model_dir.parent, Path("/")):
        response = client.post("/admin/reload", json={"model_dir": str(target)})
        assert response.status_code == 403
        assert str(model_dir.parent.resolve()) in response.json()["detail"]
    assert service.current.version == version
    # a configured root instead
    rooted = TestClient(
        create_app(Service(model_dir, service.store, models_root=tmp_path / "elsewhere"))
    )
    assert rooted.post("/admin/reload", json={"model_dir": str(outside)}).status_code == 200
    assert rooted.post("/admin/reload", json={"model_dir": str(model_dir)}).status_code == 403


def test_a_broken_model_directory_under_the_root_is_422_and_changes_nothing(
    client: TestClient, service: Service, model_dir: Path
) -> None:
    version = service.current.version
    empty = model_dir.parent / "empty"
    empty.mkdir()
    corrupt = model_dir.parent / "corrupt"
    shutil.copytree(model_dir, corrupt)
    (corrupt / "config.yaml").write_text("model: [unclosed\n")
    (corrupt / "evorec-model.json").write_text('["an", "array"]')
    for broken in (empty, corrupt):
        response = client.post("/admin/reload", json={"model_dir": str(broken)})
        (error,) = errors(response)
        assert error["loc"] == ["body", "model_dir"] and str(broken) in error["msg"]
    assert service.current.version == version
    assert client.get("/health").json()["model_version"] == version


# -- forms, auth, binding -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("application/x-www-form-urlencoded", b""),
        ("application/x-www-form-urlencoded", b"model_dir=%2Ftmp"),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
        ("text/plain", b'{"user_id": "u", "item_id": "a"}'),
    ],
)
def test_form_and_text_bodies_are_refused_with_415(
    client: TestClient, service: Service, content_type: str, raw: bytes
) -> None:
    reloads, before = reload_count(client), service.store.count()
    for method, path in (("POST", "/admin/reload"), ("POST", "/events"), ("DELETE", "/users/u")):
        response = client.request(method, path, content=raw, headers={"content-type": content_type})
        assert response.status_code == 415 and "JSON" in response.json()["detail"]
    assert reload_count(client) == reloads and service.store.count() == before
    assert client.post("/admin/reload").status_code == 200  # no body at all: a plain reload


def reload_count(client: TestClient) -> str:
    lines = client.get("/metrics").text.splitlines()
    return next(line for line in lines if line.startswith("evorec_model_reloads_total"))


def test_without_an_api_key_serve_listens_on_loopback_only(run, trained: Path) -> None:
    result = run("serve", "--model-dir", trained, "--host", "0.0.0.0", "--port", "0")
    assert result.code == 1 and "--allow-open" in result.err and "--api-key" in result.err


def test_serve_says_at_start_up_that_writes_are_open_without_a_key(
    trained: Path, tmp_path: Path
) -> None:
    with running_server(trained, f"sqlite:///{tmp_path / 'events.db'}") as server:
        output = server.output()
    assert "no API key: writes and admin calls are open to local processes only" in output


def test_the_spec_declares_every_status_and_the_key_as_a_security_scheme(
    model_dir: Path, store: EventStore
) -> None:
    keyed = TestClient(create_app(Service(model_dir, store, api_key=KEY))).get("/openapi.json")
    spec = keyed.json()
    assert spec["components"]["securitySchemes"] == {
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "the --api-key",
        }
    }
    expected = {
        ("post", "/events"): {"201", "401", "409", "413", "415", "422", "503"},
        ("delete", "/users/{user_id}"): {"200", "401", "404", "413", "415", "422", "503"},
        ("post", "/admin/reload"): {"200", "401", "403", "409", "413", "415", "422"},
        ("get", "/users/{user_id}/recommendations"): {"200", "404", "413", "422", "503"},
        ("get", "/users/{user_id}/history"): {"200", "404", "413", "422", "503"},
        ("post", "/recommendations"): {"200", "413", "415", "422"},
        ("get", "/items/{item_id}/similar"): {"200", "404", "413", "422"},
        ("get", "/health"): {"200", "413", "422", "503"},
    }
    for (method, path), statuses in expected.items():
        operation = spec["paths"][path][method]
        assert set(operation["responses"]) == statuses, (method, path)
        assert (operation.get("security") is not None) == ("401" in statuses), (method, path)
        invalid = operation["responses"]["422"]["content"]["application/json"]["schema"]
        assert invalid == {"$ref": "#/components/schemas/Invalid"}
    open_spec = TestClient(create_app(Service(model_dir, store))).get("/openapi.json").json()
    assert "securitySchemes" not in open_spec["components"]
    assert "401" not in open_spec["paths"]["/events"]["post"]["responses"]


# -- idempotency --------------------------------------------------------------------------


def test_a_retried_batch_with_the_same_key_is_stored_once(
    client: TestClient, store: EventStore
) -> None:
    seeded = store.count()
    batch = [{"user_id": "retry", "item_id": f"i{n}"} for n in range(3)]  # timestamps: now
    key = {"Idempotency-Key": "batch-0001"}
    first = client.post("/events", json=batch, headers=key)
    assert first.status_code == 201 and first.json() == {"ingested": 3, "replayed": False}
    time.sleep(1.1)  # a retry later gets other default timestamps: still the same batch
    again = client.post("/events", json=batch, headers=key)
    assert again.status_code == 201 and again.json() == {"ingested": 3, "replayed": True}
    assert store.count() == seeded + 3
    assert "evorec_events_ingested_total 3.0" in client.get("/metrics").text

    other = client.post("/events", json=batch[:1], headers=key)
    assert other.status_code == 409 and "batch-0001" in other.json()["detail"]
    assert client.post("/events", json=batch).json() == {"ingested": 3, "replayed": False}
    assert store.count() == seeded + 6
    for bad in ("", "x" * 256, "has space"):
        response = client.post("/events", json=batch, headers={"Idempotency-Key": bad})
        assert errors(response)[0]["loc"] == ["header", "Idempotency-Key"]
    assert store.count() == seeded + 6


# -- history paging -----------------------------------------------------------------------


def test_history_comes_in_pages_that_say_how_to_get_the_next(
    client: TestClient, store: EventStore
) -> None:
    store.add_events(
        [{"user_id": "pager", "item_id": f"i{n}", "timestamp": n // 4} for n in range(25)]
    )
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 10} | ({} if after is None else {"after": after})
        body = client.get("/users/pager/history", params=params).json()
        seen += [event["item_id"] for event in body["events"]]
        pages += 1
        after = body["next"]
        if after is None:
            break
    assert seen == [f"i{n}" for n in range(25)] and pages == 3
    assert len(client.get("/users/pager/history").json()["events"]) == 25
    for params in ({"limit": 0}, {"limit": 10_001}, {"after": 0}, {"after": "x"}):
        errors(client.get("/users/pager/history", params=params))
    assert client.get("/users/ghost/history", params={"after": 5}).status_code == 404


# -- a heavy user -------------------------------------------------------------------------

HEAVY_EVENTS = 200_000


@pytest.fixture(scope="module")
def heavy_store(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EventStore]:
    """A store with one user of 200,000 events and one of exactly a window's worth."""
    store = EventStore(f"sqlite:///{tmp_path_factory.mktemp('heavy') / 'events.db'}")
    items = evorec.load_model(trained).dataset.item_ids.cast(pl.Utf8).to_numpy()
    rng = np.random.default_rng(0)
    for user, count in (("heavy", HEAVY_EVENTS), ("windowed", 10_000)):
        store.add_events(
            pl.DataFrame(
                {
                    "user_id": [user] * count,
                    "item_id": items[rng.integers(0, len(items), count)],
                    "timestamp": np.arange(count, dtype=np.int64),
                }
            )
        )
    yield store
    store.close()


@pytest.fixture
def live(request: pytest.FixtureRequest, trained: Path, heavy_store: EventStore) -> Iterator[str]:
    """The service on 127.0.0.1 under uvicorn, in a thread of this process."""
    service = Service(trained, heavy_store, **getattr(request, "param", {}))
    with running_app(create_app(service)) as url:
        yield url


def median_seconds(http: httpx.Client, path: str, times: int) -> float:
    elapsed = []
    for _ in range(times):
        began = time.perf_counter()
        assert http.get(path).status_code == 200
        elapsed.append(time.perf_counter() - began)
    return float(np.median(elapsed))


def test_a_heavy_users_recommendations_read_only_their_latest_events(live: str) -> None:
    with httpx.Client(base_url=live, timeout=120) as http:
        # the same rows to read: as fast as a user of exactly the window's length
        windowed = median_seconds(http, "/users/windowed/recommendations", 5)
        heavy = median_seconds(http, "/users/heavy/recommendations", 5)
        assert heavy < 3 * windowed, (heavy, windowed)  # 50x when the whole history is read
        # and the result of the latest events as a raw history
        page = http.get("/users/heavy/history", params={"limit": 1}).json()
        assert page["next"] is not None
        # (the heavy user has seen every item)
        recommended = http.get("/users/heavy/recommendations?exclude_seen=false").json()
    assert recommended["source"] == "model" and len(recommended["items"]) == 10


@pytest.mark.parametrize("live", [{"history_window": HEAVY_EVENTS}], indirect=True)
def test_health_answers_while_a_slow_store_read_is_in_flight(live: str) -> None:
    # a window holding the heavy user's every event: a read that takes a while
    done = threading.Event()
    span: list[float] = []

    def slow() -> None:
        with httpx.Client(base_url=live, timeout=120) as http:
            began = time.perf_counter()
            assert http.get("/users/heavy/recommendations").status_code == 200
            span.extend([began, time.perf_counter()])
        done.set()

    answered: list[float] = []
    reader = threading.Thread(target=slow)
    with httpx.Client(base_url=live, timeout=120) as http:
        reader.start()
        while not done.is_set():
            assert http.get("/health").status_code == 200
            answered.append(time.perf_counter())
    reader.join()
    began, ended = span
    during = [t for t in answered if began < t < ended]
    # on the event loop, the read would hold every health check until it ends
    assert len(during) >= 5, (len(during), ended - began)
