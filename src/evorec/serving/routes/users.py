"""``GET /users/{user_id}/history`` (``router``) and ``DELETE /users/{user_id}``
(``writes``: behind the API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from evorec.errors import UnknownIdError
from evorec.serving.forgetting import forgetting
from evorec.serving.guards import StrictJSONRoute
from evorec.serving.routes.common import ServiceDep, UserId, responses
from evorec.serving.schemas import (
    HISTORY_PAGE,
    MAX_HISTORY_PAGE,
    MAX_INT,
    Deleted,
    History,
    StoredEvent,
)

router = APIRouter(route_class=StrictJSONRoute)
writes = APIRouter(route_class=StrictJSONRoute)


@router.get("/users/{user_id}/history", responses=responses(404, 503))
def user_history(
    user_id: UserId,
    service: ServiceDep,
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


@writes.delete("/users/{user_id}", responses=responses(404, 415, 503))
def delete_user(user_id: UserId, service: ServiceDep) -> Deleted:
    """Erase every stored event of the user and log the erasure; afterwards the id is
    unknown. Under ``serve --forget-on-delete`` this starts forgetting the user from the
    served model in the background (as ``POST /admin/forget``, which otherwise does it);
    the next ``evorec update`` drops the user from the model's files too."""
    deleted = service.store.delete_user(user_id)
    if deleted == 0:
        raise UnknownIdError(f"unknown user id {user_id!r}")
    running = service.forget_on_delete and forgetting(service).start()
    return Deleted(user_id=user_id, deleted=deleted, forgetting=running)
