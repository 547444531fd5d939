"""What the endpoint modules share: the app's :class:`Service` as a dependency, the API
key check, path and query parameter types, and the error statuses of the OpenAPI spec."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi import Path as PathParam
from fastapi.security import APIKeyHeader
from pydantic import Field

from evorec.serving.engine import Ranked, ServedModel
from evorec.serving.schemas import MAX_ID_LENGTH, NO_NUL, Invalid, Refusal, ScoredItem
from evorec.serving.service import Service

API_KEY_HEADER = "X-API-Key"
ATTRIBUTE_PREFIX = "attr."

ERRORS = {
    401: "missing or wrong X-API-Key header",
    403: "the model directory lies outside the models root",
    404: "unknown user or item id",
    409: "conflicts with the service's state (named in the message)",
    413: "request body over the size limit",
    415: "a body other than JSON",
    422: "invalid input, each error with where it is; the input is never echoed",
    503: "the event store cannot be reached",
}


async def current_service(request: Request) -> Service:
    """The :class:`Service` of the app answering (async: no thread-pool hop)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(current_service)]

KEY_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the --api-key")


async def require_key(
    service: ServiceDep, x_api_key: Annotated[str | None, Security(KEY_HEADER)]
) -> None:
    """401 unless the request carries the service's API key (used only when it has one)."""
    key = service.api_key
    assert key is not None
    if not (x_api_key is not None and secrets.compare_digest(x_api_key.encode(), key.encode())):
        raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")


UserId = Annotated[str, PathParam(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)]
ItemId = UserId
ItemText = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)]


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error statuses an endpoint can answer (413 and 422 any of
    them)."""
    return {
        status: {"model": Invalid if status == 422 else Refusal, "description": ERRORS[status]}
        for status in sorted({*statuses, 413, 422})
    }


def attributes(request: Request) -> dict[str, str]:
    """The ``attr.<column>=<value>`` filters of the query string."""
    params = request.query_params
    return {
        key[len(ATTRIBUTE_PREFIX) :]: params[key]
        for key in params
        if key.startswith(ATTRIBUTE_PREFIX)
    }


def scored(served: ServedModel, ranked: Ranked) -> list[ScoredItem]:
    """Ranked item indices as original ids with their scores and ranks (from 1)."""
    return [
        ScoredItem(item_id=served.item_ids[item], score=float(score), rank=rank)
        for rank, (item, score) in enumerate(zip(ranked.items, ranked.scores, strict=True), 1)
    ]
