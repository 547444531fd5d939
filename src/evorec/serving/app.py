"""The REST service: events in, recommendations out, from every user's full stored history.

Endpoints (OpenAPI at ``/openapi.json``, docs at ``/docs``):

- ``POST /events``: one event or a list; answered only once committed to the store.
- ``GET /users/{user_id}/recommendations``: top-K from the user's stored history.
- ``POST /recommendations``: top-K for a raw history in the body.
- ``GET /items/{item_id}/similar``, ``GET /users/{user_id}/history``.
- ``DELETE /users/{user_id}``: erase the user's events (the id is unknown afterwards) and
  log the erasure, so that the next ``evorec update`` leaves the user out of the model too.
- ``POST /admin/reload``: load a model (the same or another directory), then swap it in;
  when the service watches a link (``serve --watch``), the link is re-pointed at it too, so
  that every worker process follows within its poll interval.
- ``GET /health``, ``GET /metrics`` (Prometheus text, summed over worker processes).

A user's recommendations and history come from the store alone, never from the histories
saved with the model: an erased user is unknown at once.

Write and admin endpoints need the ``X-API-Key`` header when the service has a key.

Reads (recommendations, similar items, health, metrics) run on the event loop: they are a
few milliseconds of CPU under the GIL, which a thread hop would only lengthen, and requests
that queue behind one another are answered in arrival order. Writes, which wait on the
store's commit, and history listings run in the thread pool.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evorec import __version__
from evorec.data.histories import Histories
from evorec.errors import EvorecError, StoreError, UnknownIdError
from evorec.serving.engine import Ranked, ServedModel
from evorec.serving.schemas import (
    MAX_K,
    Deleted,
    EventBatch,
    EventIn,
    Health,
    History,
    HistoryIn,
    Ingested,
    Recommendations,
    Reloaded,
    ReloadIn,
    ScoredItem,
    Similar,
    StoredEvent,
)
from evorec.store import EventStore
from evorec.training.incremental import point

ATTRIBUTE_PREFIX = "attr."
WORKER_HEADER = "X-Evorec-Worker"  # with several worker processes: the answering one's pid
# set for worker processes (evorec.serving.server): metric values live in files there
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Service:
    """The served model, the event store and the metrics of one app.

    ``current`` is replaced whole on reload; a request reads it once and keeps that model
    to the end. ``workers``: how many processes serve the same socket; ``watched_link``:
    the link that ``serve --watch`` polls, re-pointed by a reload."""

    def __init__(
        self,
        model_dir: str | Path,
        store: EventStore,
        api_key: str | None = None,
        workers: int = 1,
        watched_link: Path | None = None,
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.workers = workers
        self.watched_link = watched_link
        self.multiprocess = MULTIPROC_DIR in os.environ
        self.current = ServedModel(model_dir)
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


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of a :class:`Service`."""
    app = FastAPI(
        title="evorec",
        version=__version__,
        description="Recommendations that follow each user's evolving interests.",
    )
    app.state.service = service

    app.add_middleware(Observe, service=service)

    @app.exception_handler(EvorecError)
    async def evorec_error(_request: Request, exc: EvorecError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownIdError) else 422
        if isinstance(exc, StoreError):
            status = 503
        return JSONResponse({"detail": str(exc)}, status_code=status)

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        key = service.api_key
        if key is not None and not (
            x_api_key is not None and secrets.compare_digest(x_api_key.encode(), key.encode())
        ):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    writer = [Depends(require_key)]

    @app.post("/events", status_code=201, dependencies=writer)
    def post_events(body: EventIn | EventBatch) -> Ingested:
        """Store one event or a list of events, in one transaction."""
        events = body if isinstance(body, list) else [body]
        count = service.store.add_events(e.model_dump() for e in events)
        service.ingested.inc(count)
        return Ingested(ingested=count)

    @app.get("/users/{user_id}/recommendations")
    async def user_recommendations(
        user_id: str,
        request: Request,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        exclude_seen: bool = True,
        allow: Annotated[list[str] | None, Query(description="only these items")] = None,
        deny: Annotated[list[str] | None, Query(description="never these items")] = None,
    ) -> Recommendations:
        """Top-K items from the user's full stored history, events posted a moment ago
        included. Filters: ``allow``/``deny`` (repeatable), and ``attr.<column>=<value>``
        on the model's item table (a list column matches when it holds the value); item ids
        the model does not know are ignored. A user none of whose items the model knows
        gets the most popular items."""
        served = service.current
        events = service.store.history(user_id)
        if events.height == 0:
            raise UnknownIdError(f"unknown user id {user_id!r}")
        history = served.history(events, user_id=user_id)
        ranked = _rank(served, history, k, exclude_seen, allow, deny, _attributes(request))
        return _recommendations(served, ranked, user_id)

    @app.post("/recommendations")
    async def history_recommendations(body: HistoryIn) -> Recommendations:
        """Top-K items for a raw history (anonymous or session users)."""
        served = service.current
        items = [str(i) for i in body.items]
        frame: dict[str, Any] = {"item_id": items}
        if body.timestamps is not None:
            frame["timestamp"] = body.timestamps
        events = pl.DataFrame(frame, schema_overrides={"item_id": pl.Utf8})
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

    @app.get("/items/{item_id}/similar")
    async def similar_items(
        item_id: str, request: Request, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10
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

    @app.get("/users/{user_id}/history")
    def user_history(user_id: str) -> History:
        """The user's stored events, oldest first."""
        served = service.current
        events = service.store.history(user_id)
        if events.height == 0:
            raise UnknownIdError(f"unknown user id {user_id!r}")
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
        )

    @app.delete("/users/{user_id}", dependencies=writer)
    def delete_user(user_id: str) -> Deleted:
        """Erase every stored event of the user and log the erasure (the next ``evorec
        update`` drops the user from the model's files); afterwards the id is unknown."""
        deleted = service.store.delete_user(user_id)
        if deleted == 0:
            raise UnknownIdError(f"unknown user id {user_id!r}")
        return Deleted(user_id=user_id, deleted=deleted)

    @app.post("/admin/reload", dependencies=writer)
    def reload(body: ReloadIn | None = None) -> Reloaded:
        """Load the model directory (default: the one served) and swap it in; requests in
        flight finish on the previous model. A directory that fails to load changes
        nothing. When the service watches a link, the link is re-pointed at the directory:
        the other worker processes swap it in within their poll interval."""
        link = service.watched_link
        if service.workers > 1 and link is None:
            raise HTTPException(
                409,
                f"{service.workers} worker processes serve this model and a reload reaches "
                "one: serve a link with --watch, then a reload re-points it",
            )
        version, previous = service.reload(body.model_dir if body else None)
        if link is not None:
            point(link, service.current.model_dir)
        return Reloaded(model_version=version, previous_version=previous)

    @app.get("/health")
    async def health() -> Health:
        service.store.ping()
        return Health(status="ok", model_version=service.current.version)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format; with worker processes, the sum over all of them."""
        registry = service.registry
        if service.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


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
