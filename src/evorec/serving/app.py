"""The REST service: events in, recommendations out, from every user's stored history.

Endpoints (OpenAPI at ``/openapi.json``, docs at ``/docs``):

- ``POST /events``: one event or a list; answered only once committed to the store. With an
  ``Idempotency-Key`` header a retried batch is stored once (the reply says ``replayed``).
- ``GET /users/{user_id}/recommendations``: top-K from the user's latest stored events.
- ``POST /recommendations``: top-K for a raw history in the body.
- ``GET /items/{item_id}/similar``; ``GET /users/{user_id}/history``, in pages (``limit``,
  then ``after`` = the previous page's ``next``).
- ``DELETE /users/{user_id}``: erase the user's events (the id is unknown afterwards) and
  log the erasure, so that the next ``evorec update`` leaves the user out of the model too.
- ``POST /admin/reload``: load a model (the same or another directory under the models
  root: by default the served directory's parent), then swap it in; when the service
  watches a link (``serve --watch``), the link is re-pointed at it too, so that every
  worker process follows within its poll interval.
- ``GET /health``, ``GET /metrics`` (Prometheus text, summed over worker processes).

A user's recommendations and history come from the store alone, never from the histories
saved with the model: an erased user is unknown at once. A recommendation reads the user's
latest :data:`HISTORY_WINDOW` events (at least the model's ``max_len``) backwards along the
store's index, so a user's length does not matter; seen-item filtering covers those events.

Write and admin endpoints need the ``X-API-Key`` header when the service has a key (the
OpenAPI spec then declares it as a security scheme). Bodies are bounded, strict JSON
(``evorec.serving.guards``); every error is JSON: ``{"detail": "..."}``, or for 422 a list
of ``{loc, msg, type}`` that never echoes the input.

Endpoints that touch the store run in the thread pool, so that a slow read or a commit never
holds up the event loop (``/health`` included); raw-history recommendations, similar items
and metrics, a few milliseconds of CPU under the GIL, run on the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import Field
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evorec.data.histories import Histories
from evorec.errors import DataError, EvorecError, StoreError, UnknownIdError
from evorec.modeldir import point
from evorec.serving.engine import Ranked, ServedModel
from evorec.serving.guards import (
    LimitBody,
    StrictJSONRoute,
    invalid,
    json_only,
    validation_reply,
)
from evorec.serving.schemas import (
    HISTORY_PAGE,
    MAX_HISTORY_PAGE,
    MAX_ID_LENGTH,
    MAX_INT,
    MAX_K,
    NO_NUL,
    Deleted,
    EventIn,
    EventsIn,
    Health,
    History,
    HistoryIn,
    Ingested,
    Invalid,
    Recommendations,
    Refusal,
    Reloaded,
    ReloadIn,
    ScoredItem,
    Similar,
    StoredEvent,
)
from evorec.store import EventStore, IdempotencyConflict
from evorec.version import __version__

ATTRIBUTE_PREFIX = "attr."
API_KEY_HEADER = "X-API-Key"
MAX_BODY_BYTES = 8 * 2**20  # holds a batch of 10,000 events with long ids
HISTORY_WINDOW = 10_000  # latest events a recommendation reads (at least the model's max_len)
WORKER_HEADER = "X-Evorec-Worker"  # with several worker processes: the answering one's pid
# set for worker processes (evorec.serving.server): metric values live in files there
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Service:
    """The served model, the event store and the metrics of one app.

    ``current`` is replaced whole on reload; a request reads it once and keeps that model
    to the end. ``workers``: how many processes serve the same socket; ``watched_link``:
    the link that ``serve --watch`` polls, re-pointed by a reload; ``models_root``: the
    only directory ``POST /admin/reload`` loads models from (default: the parent of
    ``model_dir``); ``history_window``: the latest events a recommendation reads;
    ``max_body_bytes``: the largest request body accepted."""

    def __init__(
        self,
        model_dir: str | Path,
        store: EventStore,
        api_key: str | None = None,
        workers: int = 1,
        watched_link: Path | None = None,
        models_root: str | Path | None = None,
        history_window: int = HISTORY_WINDOW,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.workers = workers
        self.watched_link = watched_link
        self.models_root = Path(models_root or Path(model_dir).absolute().parent).resolve()
        self.history_window = history_window
        self.max_body_bytes = max_body_bytes
        self.multiprocess = MULTIPROC_DIR in os.environ
        self.current = ServedModel(model_dir)
        self.watch_error: str | None = None  # set by serve --watch while a version fails
        self._reload_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "evorec_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "evorec_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            registry=self.registry,
        )
        self.ingested = Counter(
            "evorec_events_ingested", "events committed to the store", registry=self.registry
        )
        self.model_info = Gauge(
            "evorec_model_info",
            "the served model (value 1; with workers, 1 while any worker serves it)",
            ["version"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.reloads = Counter(
            "evorec_model_reloads", "models swapped in by reload", registry=self.registry
        )
        self.model_info.labels(self.current.version).set(1)
        # a fresh store starts with the model's training events
        self.seeded = store.import_dataset(self.current.dataset)

    def window(self, served: ServedModel) -> int:
        """How many of a user's latest events a recommendation reads."""
        max_len = getattr(getattr(served.model, "config", None), "max_len", 0)
        return max(self.history_window, max_len if isinstance(max_len, int) else 0)

    def reload_target(self, model_dir: str | None) -> Path:
        """The directory a reload request names (default: the served one), resolved;
        403 when it lies outside the models root."""
        if model_dir is None:
            return self.current.model_dir
        try:
            target = Path(model_dir).expanduser().resolve()
        except (OSError, RuntimeError) as exc:
            raise invalid(["body", "model_dir"], f"not a usable path: {exc}") from None
        if self.models_root not in target.parents:
            raise HTTPException(
                403,
                f"reload loads model directories under {self.models_root} only "
                "(serve --models-root sets another)",
            )
        return target

    def reload(self, model_dir: str | Path | None) -> tuple[str, str]:
        """Load a model fully, then swap it in; returns (new, previous) versions."""
        with self._reload_lock:
            previous = self.current
            fresh = ServedModel(model_dir or previous.model_dir)
            self.current = fresh
            self.model_info.labels(previous.version).set(0)
            if not self.multiprocess:  # label sets cannot be removed from the shared files
                self.model_info.clear()
            self.model_info.labels(fresh.version).set(1)
            self.reloads.inc()
        return fresh.version, previous.version


class Observe:
    """Counts and times every HTTP request by route (plain ASGI: no per-request task or
    body streaming, unlike ``@app.middleware``); tags answers with the worker's pid when
    several processes serve."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        tag = self.service.workers > 1

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if tag:
                    MutableHeaders(scope=message).append(WORKER_HEADER, str(os.getpid()))
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.service.requests.labels(method, route, str(status)).inc()
            self.service.latency.labels(method, route).observe(time.perf_counter() - start)


_ERRORS = {
    401: "missing or wrong X-API-Key header",
    403: "the model directory lies outside the models root",
    404: "unknown user or item id",
    409: "conflicts with the service's state (named in the message)",
    413: "request body over the size limit",
    415: "a body other than JSON",
    422: "invalid input, each error with where it is; the input is never echoed",
    503: "the event store cannot be reached",
}

KEY_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the --api-key")
UserId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)]
ItemId = UserId
ItemText = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="any client-chosen key (printable ASCII): a retried batch with the same "
        "key is stored once and answered with the first attempt's count",
    ),
]


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error statuses an endpoint can answer (413 any of them)."""
    return {
        status: {"model": Invalid if status == 422 else Refusal, "description": _ERRORS[status]}
        for status in sorted({*statuses, 413, 422})
    }


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of a :class:`Service`."""
    app = FastAPI(
        title="evorec",
        version=__version__,
        description="Recommendations that follow each user's evolving interests.",
    )
    app.router.route_class = StrictJSONRoute
    app.state.service = service

    app.add_middleware(LimitBody, limit=service.max_body_bytes)
    app.add_middleware(Observe, service=service)  # outermost: counts the 413s too

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_reply(exc.errors())

    @app.exception_handler(EvorecError)
    async def evorec_error(_request: Request, exc: EvorecError) -> JSONResponse:
        status = {UnknownIdError: 404, StoreError: 503, IdempotencyConflict: 409}.get(type(exc))
        if status is None:
            field = exc.field if isinstance(exc, DataError) and exc.field else None
            return validation_reply(invalid([field] if field else [], str(exc)).errors())
        return JSONResponse({"detail": str(exc)}, status_code=status)

    def require_key(x_api_key: Annotated[str | None, Security(KEY_HEADER)]) -> None:
        key = service.api_key
        assert key is not None
        if not (x_api_key is not None and secrets.compare_digest(x_api_key.encode(), key.encode())):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    # the security scheme is declared only where the service has a key
    keyed = service.api_key is not None
    writer = [Depends(json_only), *([Security(require_key)] if keyed else [])]
    auth = (401,) if keyed else ()

    @app.post(
        "/events",
        status_code=201,
        dependencies=writer,
        responses=_responses(*auth, 409, 415, 503),
    )
    def post_events(body: EventsIn, idempotency_key: IdempotencyKey = None) -> Ingested:
        """Store one event or a list of at most 10,000 events, in one transaction."""
        events = body if isinstance(body, list) else [body]
        rows = [e.model_dump() for e in events]
        if idempotency_key is None:
            count, replayed = service.store.add_events(rows), False
        else:
            fingerprint = _fingerprint(events)
            count, replayed = service.store.add_events_once(rows, idempotency_key, fingerprint)
        if not replayed:
            service.ingested.inc(count)
        return Ingested(ingested=count, replayed=replayed)

    @app.get("/users/{user_id}/recommendations", responses=_responses(404, 503))
    def user_recommendations(
        user_id: UserId,
        request: Request,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude_seen: bool = True,
        allow: Annotated[list[ItemText], Query(description="only these items")] = [],  # noqa: B006
        deny: Annotated[list[ItemText], Query(description="never these items")] = [],  # noqa: B006
    ) -> Recommendations:
        """Top-K items from the user's latest stored events, those posted a moment ago
        included. Filters: ``allow``/``deny`` (repeatable), and ``attr.<column>=<value>``
        on the model's item table (a list column matches when it holds the value); item ids
        the model does not know are ignored. A user none of whose items the model knows
        gets the most popular items."""
        served = service.current
        events = service.store.history(user_id, last=service.window(served))
        if events.height == 0:
            raise UnknownIdError(f"unknown user id {user_id!r}")
        history = served.history(events, user_id=user_id)
        # a query list is never empty when given: empty means no allow-list
        allowed = allow or None
        ranked = _rank(served, history, k, exclude_seen, allowed, deny, _attributes(request))
        return _recommendations(served, ranked, user_id)

    @app.post("/recommendations", dependencies=[Depends(json_only)], responses=_responses(415))
    async def history_recommendations(body: HistoryIn) -> Recommendations:
        """Top-K items for a raw history (anonymous or session users)."""
        served = service.current
        items = [str(i) for i in body.items]
        frame: dict[str, Any] = {"item_id": items}
        if body.timestamps is not None:
            frame["timestamp"] = body.timestamps
        events = pl.DataFrame(frame, schema_overrides={"item_id": pl.Utf8, "timestamp": pl.Int64})
        history = served.history(events, with_times=body.timestamps is not None)
        ranked = _rank(
            served,
            history,
            body.k,
            body.exclude_seen,
            None if body.allow is None else [str(i) for i in body.allow],
            None if body.deny is None else [str(i) for i in body.deny],
            body.attributes,
        )
        return _recommendations(served, ranked, None)

    @app.get("/items/{item_id}/similar", responses=_responses(404))
    async def similar_items(
        item_id: ItemId, request: Request, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10
    ) -> Similar:
        """The items whose vectors are closest (cosine); ``attr.<column>=<value>`` filters."""
        served = service.current
        item = served.item_index(item_id)
        ranked = served.similar(item, k, served.allowed(None, _attributes(request)))
        return Similar(
            item_id=served.item_ids[item],
            model_version=served.version,
            items=_scored(served, ranked),
        )

    @app.get("/users/{user_id}/history", responses=_responses(404, 503))
    def user_history(
        user_id: UserId,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_PAGE)] = HISTORY_PAGE,
        after: Annotated[
            int | None, Query(ge=1, le=MAX_INT, description="the `next` of the page before")
        ] = None,
    ) -> History:
        """The user's stored events, oldest first, ``limit`` per page; ``next`` is the
        ``after`` value of the following page (null on the last one)."""
        served = service.current
        events = service.store.history_page(user_id, limit + 1, after)
        if events.height == 0 and (after is None or not service.store.has_user(user_id)):
            raise UnknownIdError(f"unknown user id {user_id!r}")
        more = events.height > limit
        events = events.head(limit)
        return History(
            user_id=user_id,
            events=[
                StoredEvent(
                    item_id=served.typed_item(row["item_id"]),
                    timestamp=row["timestamp"],
                    behavior=row["behavior"],
                    value=row["value"],
                )
                for row in events.iter_rows(named=True)
            ],
            next=int(events["line"][-1]) if more else None,
        )

    @app.delete("/users/{user_id}", dependencies=writer, responses=_responses(*auth, 404, 415, 503))
    def delete_user(user_id: UserId) -> Deleted:
        """Erase every stored event of the user and log the erasure (the next ``evorec
        update`` drops the user from the model's files); afterwards the id is unknown."""
        deleted = service.store.delete_user(user_id)
        if deleted == 0:
            raise UnknownIdError(f"unknown user id {user_id!r}")
        return Deleted(user_id=user_id, deleted=deleted)

    @app.post("/admin/reload", dependencies=writer, responses=_responses(*auth, 403, 409, 415))
    def reload(body: ReloadIn | None = None) -> Reloaded:
        """Load the model directory (default: the one served; others only under the models
        root) and swap it in; requests in flight finish on the previous model. A directory
        that fails to load changes nothing (422). When the service watches a link, the
        link is re-pointed at the directory: the other worker processes swap it in within
        their poll interval."""
        link = service.watched_link
        if service.workers > 1 and link is None:
            raise HTTPException(
                409,
                f"{service.workers} worker processes serve this model and a reload reaches "
                "one: serve a link with --watch, then a reload re-points it",
            )
        target = service.reload_target(body.model_dir if body else None)
        try:
            version, previous = service.reload(target)
        except Exception as exc:  # whatever a directory holds, the served model stays
            raise invalid(["body", "model_dir"], _load_failure(target, exc)) from None
        if link is not None:
            point(link, service.current.model_dir)
        return Reloaded(model_version=version, previous_version=previous)

    @app.get("/health", responses=_responses(503))
    def health() -> Health:
        service.store.ping()
        return Health(
            status="ok",
            model_version=service.current.version,
            model_update="failing" if service.watch_error else "ok",
            model_update_error=service.watch_error,
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format; with worker processes, the sum over all of them."""
        registry = service.registry
        if service.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _fingerprint(events: list[EventIn]) -> str:
    """A digest of a batch as the client sent it (defaults left out: a retry without
    timestamps is the same batch)."""
    sent = [event.model_dump(exclude_unset=True) for event in events]
    return hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()


def _load_failure(target: Path, exc: Exception) -> str:
    if isinstance(exc, EvorecError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or target}: {exc.strerror or exc}"
    return f"{target}: cannot load the model directory ({type(exc).__name__}: {exc})"


def _attributes(request: Request) -> dict[str, str]:
    params = request.query_params
    return {
        key[len(ATTRIBUTE_PREFIX) :]: params[key]
        for key in params
        if key.startswith(ATTRIBUTE_PREFIX)
    }


def _rank(
    served: ServedModel,
    history: Histories,
    k: int,
    exclude_seen: bool,
    allow: list[str] | None,
    deny: list[str] | None,
    attributes: dict[str, str],
) -> Ranked:
    parts = [history.items] if exclude_seen else []
    if deny:
        parts.append(served.known_items(deny))
    exclude = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return served.recommend(history, k, exclude, served.allowed(allow, attributes))


def _scored(served: ServedModel, ranked: Ranked) -> list[ScoredItem]:
    return [
        ScoredItem(item_id=served.item_ids[item], score=float(score), rank=rank)
        for rank, (item, score) in enumerate(zip(ranked.items, ranked.scores, strict=True), 1)
    ]


def _recommendations(served: ServedModel, ranked: Ranked, user_id: str | None) -> Recommendations:
    return Recommendations(
        user_id=user_id,
        model_version=served.version,
        source=ranked.source,
        items=_scored(served, ranked),
    )
