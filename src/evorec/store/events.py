"""The event store: every user's events, durable, behind one interface for SQLite and
PostgreSQL.

Ids are stored as text; callers convert them back with the model dataset's id type. Frames
that leave the store are canonical events (``evorec.data.schema``) whose ``line`` column
holds the store's event id: it orders events of equal timestamp by arrival and is the
cursor of :meth:`EventStore.events`.

Erasure: :meth:`EventStore.delete_user` deletes a user's events and records the user in
``erased_users`` in the same transaction, so that a model update can drop the user's events
from the model's own files too. The log keeps a digest of the id (sha256 of the store's id
and the user id), never the id: it recognises an erased user's id when a model's dataset
holds it (:meth:`EventStore.erased_among`) without naming anyone. SQLite overwrites deleted
rows (``secure_delete``) and empties its write-ahead log after an erasure, so the id is not
left in the database files; PostgreSQL keeps dead rows until ``VACUUM``. A user who posts
again afterwards starts over: the store then holds only the events posted after the erasure.

Idempotency: :meth:`EventStore.add_events_once` stores a batch under a client's key in the
same transaction as its events (``idempotency_keys``); a retry with that key stores nothing
and answers the first attempt's count.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from evorec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from evorec.data.download import data_home
from evorec.data.schema import BEHAVIOR, EVENT_COLUMNS, ITEM, LINE, TIME, USER, VALUE
from evorec.errors import DataError, EvorecError, StoreError

CHUNK_ROWS = 20_000  # rows per INSERT batch when importing a dataset
ID_CHUNK = 500  # user ids per IN (...) query

metadata = MetaData()

# SQLite only aliases the row id (an auto-incrementing key) for a column typed INTEGER
EventId = BigInteger().with_variant(Integer, "sqlite")

events_table = Table(
    "events",
    metadata,
    Column("id", EventId, primary_key=True, autoincrement=True),
    Column("user_id", Text, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("behavior", Text, nullable=True),
    Column("value", Double, nullable=True),
    Column("ingested_at", BigInteger, nullable=False),  # unix milliseconds
)
Index("ix_events_user_time", events_table.c.user_id, events_table.c.timestamp, events_table.c.id)

version_table = Table("schema_version", metadata, Column("version", Integer, nullable=False))
store_meta = Table(
    "store_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)


erased_table = Table(
    "erased_users",
    metadata,
    Column("user_id", Text, primary_key=True),  # from schema v4: the id's erasure_digest
    Column("erased_at", BigInteger, nullable=False),  # unix milliseconds, the latest erasure
)

idempotency_table = Table(
    "idempotency_keys",
    metadata,
    Column("key", Text, primary_key=True),
    Column("events", Integer, nullable=False),  # how many the batch stored
    Column("fingerprint", Text, nullable=False),  # the caller's digest of the batch
    Column("stored_at", BigInteger, nullable=False),  # unix milliseconds
)

STORE_ID = "store_id"  # store_meta key: a random id naming this store


def _create_v1(conn: Connection) -> None:
    events_table.create(conn)
    store_meta.create(conn)


def _erasure_log_and_store_id(conn: Connection) -> None:
    erased_table.create(conn)
    conn.execute(insert(store_meta).values(key=STORE_ID, value=uuid.uuid4().hex))


def _idempotency_keys(conn: Connection) -> None:
    idempotency_table.create(conn)


def erasure_digest(store_id: str, user_id: str) -> str:
    """What the erasure log keeps of an erased user id: sha256 of the store id and the id."""
    return hashlib.sha256(f"{store_id}\x00{user_id}".encode()).hexdigest()


def _erasure_log_digests(conn: Connection) -> None:
    store_id = conn.execute(select(store_meta.c.value).where(store_meta.c.key == STORE_ID))
    salt = str(store_id.scalar_one())
    rows = conn.execute(select(erased_table.c.user_id, erased_table.c.erased_at)).all()
    conn.execute(delete(erased_table))
    if rows:
        digests = [{"user_id": erasure_digest(salt, u), "erased_at": at} for u, at in rows]
        conn.execute(insert(erased_table), digests)


# Ordered schema migrations: step ``n`` brings the schema from version ``n`` to ``n + 1``.
# A new store runs them all; append steps, never edit released ones.
MIGRATIONS = (_create_v1, _erasure_log_and_store_id, _idempotency_keys, _erasure_log_digests)
SCHEMA_VERSION = len(MIGRATIONS)

STORE_SCHEMA = {
    USER: pl.Utf8,
    ITEM: pl.Utf8,
    TIME: pl.Int64,
    BEHAVIOR: pl.Utf8,
    VALUE: pl.Float64,
    LINE: pl.Int64,
}
_SELECT = (
    events_table.c.user_id,
    events_table.c.item_id,
    events_table.c.timestamp,
    events_table.c.behavior,
    events_table.c.value,
    events_table.c.id,
)


class IdempotencyConflict(EvorecError):
    """An idempotency key sent again with another batch than the one stored under it."""


def default_url() -> str:
    """The embedded store: ``<data home>/store/events.db``."""
    return f"sqlite:///{data_home() / 'store' / 'events.db'}"


def _engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"--db {url!r}: not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3
        return _create(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise StoreError(f"--db {_safe(parsed)}: use a sqlite:/// or postgresql:// URL")
    if not parsed.database or parsed.database == ":memory:":
        raise StoreError(f"--db {url}: give a database file, sqlite:///PATH")
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = _create(parsed, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # every commit is fsynced: an acknowledged write survives a crash or power loss
        cursor.execute("PRAGMA synchronous=FULL")
        # deleted rows are overwritten, not left in free pages (erasure)
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # writers take the write lock up front, so that concurrent writers queue on the
        # busy timeout instead of failing on a lock upgrade
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _create(url: URL, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        raise StoreError(f"--db {_safe(url)}: {exc}") from None


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


class EventStore:
    """Users' events in SQLite (default: the embedded file under the data home) or
    PostgreSQL (``postgresql://...``, driver psycopg 3). Opening it creates or migrates the
    schema. Every write is one transaction: a method that returns has committed."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _engine(self.url)
        self.display_url = _safe(self.engine.url)
        with self._guard("open"):
            self._migrate()
            self.store_id = self._meta(STORE_ID)

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._write() as conn:
            if self.engine.dialect.name == "postgresql":
                # one migrating process at a time; the lock ends with the transaction
                conn.execute(select(func.pg_advisory_xact_lock(0x65766F726563)))
            version_table.create(conn, checkfirst=True)
            version = conn.execute(select(version_table.c.version)).scalar()
            if version is None:
                conn.execute(insert(version_table).values(version=0))
                version = 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.display_url}: store schema version {version} is newer than this "
                    f"evorec's ({SCHEMA_VERSION})"
                )
            for step in MIGRATIONS[version:]:
                step(conn)
            conn.execute(version_table.update().values(version=SCHEMA_VERSION))

    def _meta(self, key: str) -> str:
        with self.engine.connect() as conn:
            query = select(store_meta.c.value).where(store_meta.c.key == key)
            return str(conn.execute(query).scalar_one())

    def schema_version(self) -> int:
        with self._guard("read"), self.engine.connect() as conn:
            return int(conn.execute(select(version_table.c.version)).scalar_one())

    # -- writes ---------------------------------------------------------------------------

    def add_events(self, events: pl.DataFrame | Iterable[Mapping[str, Any]]) -> int:
        """Append events (``user_id``, ``item_id``, ``timestamp``, optional ``behavior`` and
        ``value``) in one transaction; returns how many, once committed."""
        rows = _rows(events)
        if not rows:
            return 0
        with self._guard("write"), self._write() as conn:
            conn.execute(insert(events_table), rows)
        return len(rows)

    def add_events_once(
        self, events: pl.DataFrame | Iterable[Mapping[str, Any]], key: str, fingerprint: str
    ) -> tuple[int, bool]:
        """Append a batch once per ``key``: the key is stored in the same transaction as the
        events, so a retried batch (same key) stores nothing. Returns (events stored by the
        key's batch, whether this call was a replay); :class:`IdempotencyConflict` when the
        key was stored with another ``fingerprint`` (the caller's digest of the batch)."""
        rows = _rows(events)
        claim = (
            self._insert_ignoring_conflicts(idempotency_table)
            .values(key=key, events=len(rows), fingerprint=fingerprint, stored_at=_now_ms())
            .returning(idempotency_table.c.key)
        )
        with self._guard("write"), self._write() as conn:
            # a concurrent holder of the key makes this insert wait for its commit
            if conn.execute(claim).first() is None:
                stored = conn.execute(
                    select(idempotency_table.c.events, idempotency_table.c.fingerprint).where(
                        idempotency_table.c.key == key
                    )
                ).one()
                if stored.fingerprint != fingerprint:
                    raise IdempotencyConflict(
                        f"Idempotency-Key {key!r} was used for another batch; "
                        "send a new key with a new batch"
                    )
                return int(stored.events), True
            if rows:
                conn.execute(insert(events_table), rows)
        return len(rows), False

    def _insert_ignoring_conflicts(self, table: Table) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table).on_conflict_do_nothing()

    def delete_user(self, user_id: str) -> int:
        """Erase every event of ``user_id`` and log the erasure (``erased_users``: the id's
        digest, latest time kept) in the same transaction; returns how many events were
        deleted. On SQLite the write-ahead log is then emptied into the database, whose
        deleted rows are overwritten."""
        digest = erasure_digest(self.store_id, user_id)
        with self._guard("write"), self._write() as conn:
            result = conn.execute(delete(events_table).where(events_table.c.user_id == user_id))
            conn.execute(delete(erased_table).where(erased_table.c.user_id == digest))
            conn.execute(insert(erased_table).values(user_id=digest, erased_at=_now_ms()))
        if self.engine.dialect.name == "sqlite":
            # best effort: readers still holding old pages leave the log for a later one
            with self._guard("write"), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return result.rowcount

    def import_dataset(self, dataset: Dataset) -> int:
        """Seed an empty, never seeded store with a dataset's events (original ids, in the
        dataset's chronological order); returns how many were added (0: not seeded)."""
        frame = _dataset_events(dataset)
        now = _now_ms()
        with self._guard("write"), self._write() as conn:
            seeded = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "seeded_from")
            ).scalar()
            if seeded is not None or conn.execute(select(exists(events_table.select()))).scalar():
                return 0
            for start in range(0, frame.height, CHUNK_ROWS):
                chunk = frame.slice(start, CHUNK_ROWS).with_columns(ingested_at=pl.lit(now))
                conn.execute(insert(events_table), chunk.to_dicts())
            conn.execute(insert(store_meta).values(key="seeded_from", value=dataset.name))
        return frame.height

    # -- reads ----------------------------------------------------------------------------

    def history(self, user_id: str, last: int | None = None) -> pl.DataFrame:
        """The user's events, chronological (ties in arrival order); empty when unknown.
        ``last``: only the latest ``last`` events, read backwards along the index (the
        serving hot path: a user's length does not matter)."""
        by_user = events_table.c.user_id == user_id
        if last is None:
            # one index range scan, already in (timestamp, id) order
            order = (events_table.c.timestamp, events_table.c.id)
            query = select(*_SELECT).where(by_user).order_by(*order)
        else:
            order = (events_table.c.timestamp.desc(), events_table.c.id.desc())
            query = select(*_SELECT).where(by_user).order_by(*order).limit(last)
        with self._guard("read"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _frame(rows if last is None else rows[::-1])

    def history_page(self, user_id: str, limit: int, after: int | None = None) -> pl.DataFrame:
        """At most ``limit`` of the user's events in chronological order, those after the
        user's event ``after`` (the ``line`` of an earlier page's last event; none when the
        user holds no such event)."""
        by_user = events_table.c.user_id == user_id
        query = select(*_SELECT).where(by_user)
        if after is not None:
            anchor = (
                select(events_table.c.timestamp)
                .where(by_user, events_table.c.id == after)
                .scalar_subquery()
            )
            position = tuple_(events_table.c.timestamp, events_table.c.id)
            query = query.where(position > tuple_(anchor, after))
        query = query.order_by(events_table.c.timestamp, events_table.c.id).limit(limit)
        with self._guard("read"), self.engine.connect() as conn:
            return _frame(conn.execute(query).all())

    def histories(self, user_ids: Sequence[str]) -> pl.DataFrame:
        """The events of several users, by user (in the order given), then time."""
        order = {user: n for n, user in enumerate(dict.fromkeys(user_ids))}
        rows: list[Any] = []
        with self._guard("read"), self.engine.connect() as conn:
            users = list(order)
            for start in range(0, len(users), ID_CHUNK):
                query = select(*_SELECT).where(
                    events_table.c.user_id.in_(users[start : start + ID_CHUNK])
                )
                rows += conn.execute(query).all()
        rows.sort(key=lambda r: (order[r[0]], r[2], r[5]))
        return _frame(rows)

    def events(self, since: int | None = None) -> pl.DataFrame:
        """Every event, or those stored after event id ``since`` (``line`` of an earlier
        frame), in arrival order."""
        query = select(*_SELECT).order_by(events_table.c.id)
        if since is not None:
            query = query.where(events_table.c.id > since)
        with self._guard("read"), self.engine.connect() as conn:
            return _frame(conn.execute(query).all())

    def erased_users(self) -> dict[str, int]:
        """The erasure log: each erased user's :func:`erasure_digest` with the time of its
        latest erasure (unix milliseconds)."""
        with self._guard("read"), self.engine.connect() as conn:
            return dict(
                conn.execute(select(erased_table.c.user_id, erased_table.c.erased_at)).all()
            )

    def erased_among(self, user_ids: Iterable[str]) -> list[str]:
        """The ids of ``user_ids`` (text) that the erasure log holds, in the order given."""
        by_digest = {erasure_digest(self.store_id, str(user)): str(user) for user in user_ids}
        found: set[str] = set()
        digests = list(by_digest)
        with self._guard("read"), self.engine.connect() as conn:
            for start in range(0, len(digests), ID_CHUNK):
                query = select(erased_table.c.user_id).where(
                    erased_table.c.user_id.in_(digests[start : start + ID_CHUNK])
                )
                found.update(by_digest[d] for d in conn.execute(query).scalars())
        return [user for user in by_digest.values() if user in found]

    def has_user(self, user_id: str) -> bool:
        query = select(exists().where(events_table.c.user_id == user_id))
        with self._guard("read"), self.engine.connect() as conn:
            return bool(conn.execute(query).scalar())

    def count(self) -> int:
        with self._guard("read"), self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events_table)).scalar_one())

    def ping(self) -> None:
        """Raise :class:`StoreError` when the database cannot be reached."""
        with self._guard("reach"), self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self.engine.dispose()

    # -- helpers --------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            message = str(exc.orig or exc).strip().splitlines()[0]
            raise StoreError(f"{self.display_url}: cannot {action} the store: {message}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.display_url}: cannot {action} the store: {exc}") from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rows(events: pl.DataFrame | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated insert rows; a bad event raises :class:`DataError` naming it and the field."""
    records = events.to_dicts() if isinstance(events, pl.DataFrame) else list(events)
    now = _now_ms()
    rows = []
    for n, record in enumerate(records):
        where = f"event {n}"
        row: dict[str, Any] = {"ingested_at": now}
        for key in (USER, ITEM):
            value = record.get(key)
            if value is None or isinstance(value, (bool, float)) or str(value) == "":
                raise DataError(f"{where}: missing or invalid id {value!r}", field=key)
            row[key] = str(value)
        stamp = record.get(TIME)
        if (
            isinstance(stamp, (bool, float))
            or not isinstance(stamp, (int, np.integer))
            or not -(2**63) <= stamp < 2**63
        ):
            raise DataError(f"{where}: expected unix seconds, got {stamp!r}", field=TIME)
        row[TIME] = int(stamp)
        behavior = record.get(BEHAVIOR)
        row[BEHAVIOR] = None if behavior is None else str(behavior)
        value = record.get(VALUE)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.number))
            or not math.isfinite(value)
        ):
            raise DataError(f"{where}: expected a finite number, got {value!r}", field=VALUE)
        row[VALUE] = None if value is None else float(value)
        rows.append(row)
    return rows


def _frame(rows: Sequence[Any]) -> pl.DataFrame:
    return pl.DataFrame([tuple(r) for r in rows], schema=STORE_SCHEMA, orient="row").select(
        EVENT_COLUMNS
    )


def _dataset_events(dataset: Dataset) -> pl.DataFrame:
    """A dataset's events with original ids as text and behaviour names."""
    events = dataset.events
    behavior = (
        pl.Series(BEHAVIOR, dataset.behaviors, dtype=pl.Utf8).gather(events["behavior"])
        if dataset.behaviors
        else pl.Series(BEHAVIOR, [None] * events.height, dtype=pl.Utf8)
    )
    return pl.DataFrame(
        {
            USER: dataset.user_ids.cast(pl.Utf8).gather(events[USER_IDX]),
            ITEM: dataset.item_ids.cast(pl.Utf8).gather(events[ITEM_IDX]),
            TIME: events["timestamp"].cast(pl.Int64),
            BEHAVIOR: behavior,
            VALUE: events["value"].cast(pl.Float64),
        }
    )
