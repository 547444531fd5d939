"""The event store on SQLite and on a real PostgreSQL server.

PostgreSQL runs when ``EVOREC_TEST_POSTGRES_URL`` names a database (``.ci/run`` starts one on
127.0.0.1); without it those cases skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from conftest import fresh_postgres
from sqlalchemy import create_engine, text

import evorec
from evorec.data.schema import EVENT_COLUMNS
from evorec.errors import DataError, StoreError
from evorec.store import SCHEMA_VERSION, EventStore, IdempotencyConflict, default_url
from evorec.store.events import MIGRATIONS, erasure_digest, events_table, version_table


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return fresh_postgres()


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    opened = EventStore(store_url)
    yield opened
    opened.close()


def event(user: str, item: str, timestamp: int, **extra: object) -> dict[str, object]:
    return {"user_id": user, "item_id": item, "timestamp": timestamp, **extra}


def test_new_store_runs_every_migration_and_reopens_with_its_events(store_url: str) -> None:
    store = EventStore(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.count() == 0
    assert store.add_events([event("u1", "a", 10)]) == 1
    store.close()

    reopened = EventStore(store_url)
    assert reopened.schema_version() == SCHEMA_VERSION
    assert reopened.history("u1")["item_id"].to_list() == ["a"]
    reopened.close()


def store_at_version(store_url: str, version: int) -> None:
    """A store as schema ``version`` left it (its first ``version`` migrations), holding one
    event of user ``u1``."""
    engine = create_engine(store_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        version_table.create(conn)
        conn.execute(version_table.insert().values(version=version))
        for migrate in MIGRATIONS[:version]:
            migrate(conn)
        conn.execute(
            events_table.insert().values(
                user_id="u1", item_id="a", timestamp=1, behavior=None, value=None, ingested_at=0
            )
        )
    engine.dispose()


def test_a_version_1_store_migrates_keeping_its_events_and_gets_a_store_id(
    store_url: str,
) -> None:
    # a store as the first schema version left it: events, store_meta, version 1
    store_at_version(store_url, 1)
    store = EventStore(store_url)
    assert store.schema_version() == SCHEMA_VERSION == 4
    assert store.history("u1")["item_id"].to_list() == ["a"]
    assert len(store.store_id) == 32 and store.erased_users() == {}
    store.close()
    reopened = EventStore(store_url)
    assert reopened.store_id == store.store_id
    reopened.close()


def test_a_version_2_store_migrates_to_idempotency_keys_keeping_everything(
    store_url: str,
) -> None:
    store_at_version(store_url, 2)
    store = EventStore(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.history("u1")["item_id"].to_list() == ["a"]
    assert store.add_events_once([event("u1", "b", 2)], "key", "digest") == (1, False)
    store.close()


def test_every_store_has_its_own_id(tmp_path: Path) -> None:
    first = EventStore(f"sqlite:///{tmp_path / 'a.db'}")
    second = EventStore(f"sqlite:///{tmp_path / 'b.db'}")
    assert first.store_id != second.store_id
    first.close()
    second.close()


def test_store_written_by_a_newer_evorec_is_refused(store: EventStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        EventStore(store.url)


def test_history_is_chronological_with_ties_in_arrival_order(store: EventStore) -> None:
    store.add_events([event("u1", "late", 30), event("u1", "tie-1", 20), event("u2", "x", 5)])
    store.add_events(
        pl.DataFrame(
            {
                "user_id": ["u1", "u1"],
                "item_id": ["tie-2", "early"],
                "timestamp": [20, 10],
                "behavior": ["cart", None],
                "value": [4.5, None],
            }
        )
    )
    history = store.history("u1")
    assert history.columns == list(EVENT_COLUMNS)
    assert history["item_id"].to_list() == ["early", "tie-1", "tie-2", "late"]
    assert history["timestamp"].to_list() == [10, 20, 20, 30]
    tie = history.row(2, named=True)
    assert (tie["behavior"], tie["value"]) == ("cart", 4.5)
    assert store.history("nobody").height == 0

    both = store.histories(["u2", "u1"])
    assert both["user_id"].to_list() == ["u2"] + ["u1"] * 4
    assert store.count() == 5


def test_events_since_a_cursor_are_the_later_ones_in_arrival_order(store: EventStore) -> None:
    store.add_events([event("u1", "a", 3), event("u2", "b", 1)])
    first = store.events()
    assert first["item_id"].to_list() == ["a", "b"]
    assert first.schema == pl.Schema(
        {
            "user_id": pl.Utf8,
            "item_id": pl.Utf8,
            "timestamp": pl.Int64,
            "behavior": pl.Utf8,
            "value": pl.Float64,
            "line": pl.Int64,
        }
    )
    store.add_events([event("u3", "c", 0), event("u1", "d", 9)])
    later = store.events(since=first["line"].max())
    assert later["item_id"].to_list() == ["c", "d"]
    assert store.events(since=later["line"].max()).height == 0


def test_numeric_ids_are_stored_as_text(store: EventStore) -> None:
    store.add_events([event(42, 7, 1)])  # type: ignore[arg-type]
    assert store.has_user("42")
    assert store.history("42")["item_id"].to_list() == ["7"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"item_id": "a", "timestamp": 1}, "user_id"),
        ({"user_id": "", "item_id": "a", "timestamp": 1}, "user_id"),
        ({"user_id": "u", "item_id": 1.5, "timestamp": 1}, "item_id"),
        ({"user_id": "u", "item_id": "a"}, "timestamp"),
        ({"user_id": "u", "item_id": "a", "timestamp": "noon"}, "timestamp"),
        ({"user_id": "u", "item_id": "a", "timestamp": 2**63}, "timestamp"),
        ({"user_id": "u", "item_id": "a", "timestamp": 1, "value": float("nan")}, "value"),
    ],
)
def test_a_bad_event_rejects_the_whole_batch(
    store: EventStore, bad: dict[str, object], field: str
) -> None:
    with pytest.raises(DataError, match=f"field '{field}'.*event 1"):
        store.add_events([event("u", "ok", 1), bad])
    assert store.count() == 0


def test_delete_user_erases_only_that_user(store: EventStore) -> None:
    store.add_events([event("u1", "a", 1), event("u1", "b", 2), event("u2", "a", 1)])
    assert store.delete_user("u1") == 2
    assert not store.has_user("u1") and store.has_user("u2")
    assert store.history("u1").height == 0
    assert store.delete_user("u1") == 0
    assert store.count() == 1


def test_erasures_are_logged_and_a_returning_user_starts_over(store: EventStore) -> None:
    store.add_events([event("u1", "a", 1), event("u2", "a", 1)])
    store.delete_user("u1")
    first = store.erased_users()
    logged = erasure_digest(store.store_id, "u1")  # the log keeps a digest, not the id
    assert list(first) == [logged] and first[logged] > 0
    assert store.erased_among(["u2", "u1"]) == ["u1"]
    # posting again after the erasure: a new user with only the new events
    store.add_events([event("u1", "b", 5)])
    assert store.history("u1")["item_id"].to_list() == ["b"]
    assert store.erased_users() == first
    # a second erasure keeps one log row, with the later time
    store.delete_user("u1")
    second = store.erased_users()
    assert list(second) == [logged] and second[logged] >= first[logged]
    assert store.history("u1").height == 0 and store.has_user("u2")


def test_concurrent_writers_lose_nothing(store: EventStore) -> None:
    def write(worker: int) -> None:
        for batch in range(10):
            store.add_events([event(f"w{worker}", f"i{batch}-{n}", batch) for n in range(5)])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count() == 4 * 10 * 5
    assert store.events()["item_id"].n_unique() == 10 * 5


def test_import_dataset_seeds_once_with_original_ids(store: EventStore, datasets_dir: Path) -> None:
    data = evorec.load_dataset(datasets_dir / "amazon-s3rec" / "LastFM.txt")
    assert store.import_dataset(data) == data.n_events
    assert store.count() == data.n_events

    user = data.user_ids[3]
    expected = data.item_ids.gather(data.histories[3]).cast(pl.Utf8).to_list()
    assert store.history(str(user))["item_id"].to_list() == expected

    # never twice, and not after the store was emptied by deletions either
    assert store.import_dataset(data) == 0
    for user_id in store.events()["user_id"].unique():
        store.delete_user(user_id)
    assert store.import_dataset(data) == 0
    assert store.count() == 0


def test_import_dataset_keeps_behaviours_and_values(store: EventStore) -> None:
    frame = pl.DataFrame(
        {
            "user": ["a", "a", "b", "b", "a"],
            "item": ["x", "y", "x", "y", "x"],
            "ts": [1, 2, 3, 4, 5],
            "kind": ["pv", "buy", "pv", "pv", "cart"],
        }
    )
    data = evorec.from_frame(
        frame,
        user="user",
        item="item",
        timestamp="ts",
        behavior="kind",
        preprocess_config={"min_user_events": 1, "min_item_events": 1},
    )
    store.import_dataset(data)
    assert store.history("a")["behavior"].to_list() == ["pv", "buy", "cart"]


def test_default_store_lives_under_the_data_home(evorec_home: Path) -> None:
    assert default_url() == f"sqlite:///{evorec_home / 'store' / 'events.db'}"
    store = EventStore()
    store.add_events([event("u", "i", 1)])
    journal = store.engine.connect().exec_driver_sql("PRAGMA journal_mode").scalar()
    assert journal == "wal"
    assert (evorec_home / "store" / "events.db").is_file()
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@127.0.0.1/db", "use a sqlite:/// or postgresql:// URL"),
        ("sqlite://", "give a database file"),
        ("postgresql://nobody:secret@127.0.0.1:1/db", "cannot open the store"),
    ],
)
def test_bad_store_urls_are_one_line_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        EventStore(url)
    assert "\n" not in str(info.value) and "secret" not in str(info.value)


def test_the_latest_events_are_read_backwards_along_the_index(store: EventStore) -> None:
    store.add_events([event("u1", f"i{t}", t % 5) for t in range(20)] + [event("u2", "x", 0)])
    full = store.history("u1")
    latest = store.history("u1", last=7)
    assert latest.equals(full.tail(7))  # chronological, ties in arrival order
    assert store.history("u1", last=100).equals(full)
    assert store.history("nobody", last=3).height == 0
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT * FROM events WHERE user_id = 'u1' "
                "ORDER BY timestamp DESC, id DESC LIMIT 7"
            ).all()
        steps = " ".join(row[-1] for row in plan)
        # an index range scan, no sort of the user's events
        assert "USING INDEX ix_events_user_time" in steps and "TEMP B-TREE" not in steps


def test_history_pages_cover_every_event_once_across_equal_timestamps(store: EventStore) -> None:
    store.add_events([event("u1", f"i{n}", n // 3) for n in range(10)] + [event("u2", "x", 0)])
    pages, after = [], None
    while True:
        page = store.history_page("u1", 4, after)
        if page.height == 0:
            break
        pages.append(page["item_id"].to_list())
        after = int(page["line"][-1])
    assert pages == [[f"i{n}" for n in range(s, min(s + 4, 10))] for s in (0, 4, 8)]
    # an event of another user, or none, is no position in this user's history
    other = int(store.history("u2")["line"][0])
    assert store.history_page("u1", 4, other).height == 0
    assert store.history_page("u1", 4, 10**12).height == 0


def test_a_batch_under_an_idempotency_key_is_stored_once(store: EventStore) -> None:
    batch = [event("u1", "a", 1), event("u1", "b", 2)]
    assert store.add_events_once(batch, "retry-1", "digest") == (2, False)
    assert store.add_events_once(batch, "retry-1", "digest") == (2, True)
    assert store.count() == 2
    with pytest.raises(IdempotencyConflict, match="retry-1"):
        store.add_events_once([event("u1", "c", 3)], "retry-1", "other digest")
    assert store.add_events_once([event("u1", "c", 3)], "retry-2", "other digest") == (1, False)
    assert store.history("u1")["item_id"].to_list() == ["a", "b", "c"]
    # a bad batch stores neither its events nor its key
    with pytest.raises(DataError):
        store.add_events_once([event("u1", "d", 4), {"user_id": "u1"}], "retry-3", "d")
    assert store.add_events_once([event("u1", "d", 4)], "retry-3", "d") == (1, False)


def test_concurrent_retries_of_one_key_store_the_batch_once(store: EventStore) -> None:
    batch = [event("u1", f"i{n}", n) for n in range(50)]
    results: list[tuple[int, bool]] = []

    def retry() -> None:
        results.append(store.add_events_once(batch, "same", "digest"))

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(50, False)] + [(50, True)] * 5
    assert store.count() == 50
