"""``POST /events`` (behind the API key): live events into the store."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header

from evorec.serving.guards import StrictJSONRoute
from evorec.serving.routes.common import ServiceDep, responses
from evorec.serving.schemas import EventIn, EventsIn, Ingested

router = APIRouter(route_class=StrictJSONRoute)

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


@router.post("/events", status_code=201, responses=responses(409, 415, 503))
def post_events(
    body: EventsIn, service: ServiceDep, idempotency_key: IdempotencyKey = None
) -> Ingested:
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


def _fingerprint(events: list[EventIn]) -> str:
    """A digest of a batch as the client sent it (defaults left out: a retry without
    timestamps is the same batch)."""
    sent = [event.model_dump(exclude_unset=True) for event in events]
    return hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()
