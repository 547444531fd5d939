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
latest ``HISTORY_WINDOW`` events (``evorec.serving.service``; at least the model's
``max_len``) backwards along the store's index, so a user's length does not matter;
seen-item filtering covers those events.

Write and admin endpoints need the ``X-API-Key`` header when the service has a key (the
OpenAPI spec then declares it as a security scheme). Bodies are bounded, strict JSON
(``evorec.serving.guards``); every error is JSON: ``{"detail": "..."}``, or for 422 a list
of ``{loc, msg, type}`` that never echoes the input.

Each resource's endpoints are a module of ``evorec.serving.routes``; :func:`create_app` only
assembles the app: the body guards, the request metrics, the error replies and the routers.

Endpoints that touch the store run in the thread pool, so that a slow read or a commit never
holds up the event loop (``/health`` included); raw-history recommendations, similar items
and metrics, a few milliseconds of CPU under the GIL, run on the event loop.
"""

from __future__ import annotations

import os
import time

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evorec.errors import DataError, EvorecError, StoreError, UnknownIdError
from evorec.serving.guards import LimitBody, StrictJSONRoute, invalid, json_only, validation_reply
from evorec.serving.routes import KEYED, OPEN
from evorec.serving.routes.common import ERRORS, require_key
from evorec.serving.schemas import Refusal
from evorec.serving.service import Service
from evorec.store import IdempotencyConflict
from evorec.version import __version__

WORKER_HEADER = "X-Evorec-Worker"  # with several worker processes: the answering one's pid


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


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_reply(exc.errors())


async def _evorec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EvorecError)
    status = {UnknownIdError: 404, StoreError: 503, IdempotencyConflict: 409}.get(type(exc))
    if status is None:
        field = exc.field if isinstance(exc, DataError) and exc.field else None
        return validation_reply(invalid([field] if field else [], str(exc)).errors())
    return JSONResponse({"detail": str(exc)}, status_code=status)


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of a :class:`Service`: guards, error replies and every router of
    ``evorec.serving.routes``; the keyed ones behind the API key when the service has one
    (only then does the spec declare the security scheme and the 401s)."""
    app = FastAPI(
        title="evorec",
        version=__version__,
        description="Recommendations that follow each user's evolving interests.",
    )
    app.router.route_class = StrictJSONRoute
    app.state.service = service

    app.add_middleware(LimitBody, limit=service.max_body_bytes)
    app.add_middleware(Observe, service=service)  # outermost: counts the 413s too
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(EvorecError, _evorec_error)

    keyed = service.api_key is not None
    writer = [Depends(json_only), *([Security(require_key)] if keyed else [])]
    unauthorized = {401: {"model": Refusal, "description": ERRORS[401]}} if keyed else {}
    for router in OPEN:
        app.include_router(router)
    for router in KEYED:
        app.include_router(router, dependencies=writer, responses=unauthorized)
    return app
