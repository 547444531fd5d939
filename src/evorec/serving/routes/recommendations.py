"""``GET /users/{user_id}/recommendations`` (from the stored history) and ``POST
/recommendations`` (a raw history in the body)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import APIRouter, Depends, Query, Request

from evorec.data.histories import Histories
from evorec.errors import UnknownIdError
from evorec.models.explain import explain_history
from evorec.serving.engine import Ranked, ServedModel
from evorec.serving.guards import StrictJSONRoute, json_only
from evorec.serving.routes.common import (
    ItemText,
    ServiceDep,
    UserId,
    attributes,
    responses,
    scored,
)
from evorec.serving.schemas import (
    MAX_EXPLAIN,
    MAX_K,
    ExplainingEvent,
    HistoryIn,
    Recommendations,
    ScoredItem,
)

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/users/{user_id}/recommendations", responses=responses(404, 503))
def user_recommendations(
    user_id: UserId,
    request: Request,
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    exclude_seen: bool = True,
    allow: Annotated[list[ItemText], Query(description="only these items")] = [],  # noqa: B006
    deny: Annotated[list[ItemText], Query(description="never these items")] = [],  # noqa: B006
    explain: Annotated[
        bool, Query(description="each item with the events that drive it (explained_by)")
    ] = False,
    explain_top: Annotated[
        int, Query(ge=1, le=MAX_EXPLAIN, description="explaining events per item")
    ] = 3,
) -> Recommendations:
    """Top-K items from the user's latest stored events, those posted a moment ago
    included. Filters: ``allow``/``deny`` (repeatable), and ``attr.<column>=<value>``
    on the model's item table (a list column matches when it holds the value); item ids
    the model does not know are ignored. A user none of whose items the model knows
    gets the most popular items. ``explain=true``: each item with the ``explain_top``
    events whose removal lowers its score most (occlusion over the latest 200 events)."""
    served = service.current
    events = service.store.history(user_id, last=service.window(served))
    if events.height == 0:
        raise UnknownIdError(f"unknown user id {user_id!r}")
    history = served.history(events, user_id=user_id)
    # a query list is never empty when given: empty means no allow-list
    allowed = allow or None
    ranked = _rank(served, history, k, exclude_seen, allowed, deny, attributes(request))
    recommendations = _recommendations(served, ranked, user_id)
    if explain:
        _explain(served, history, ranked, recommendations.items, explain_top)
    return recommendations


@router.post("/recommendations", dependencies=[Depends(json_only)], responses=responses(415))
async def history_recommendations(body: HistoryIn, service: ServiceDep) -> Recommendations:
    """Top-K items for a raw history (anonymous or session users); ``explain``: each item
    with the ``explain_top`` events of the history whose removal lowers its score most."""
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
    recommendations = _recommendations(served, ranked, None)
    if body.explain:
        _explain(served, history, ranked, recommendations.items, body.explain_top)
    return recommendations


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


def _explain(
    served: ServedModel, history: Histories, ranked: Ranked, items: list[ScoredItem], top: int
) -> None:
    """Fill in each item's ``explained_by``: its ``top`` events by occlusion, with the
    stored ids and times (none for popularity items)."""
    if ranked.source != "model" or not len(ranked.items):
        for item in items:
            item.explained_by = []
        return
    explanations = explain_history(served.model, history, ranked.items.tolist(), top=top)
    times = history.timestamps
    for item, explanation in zip(items, explanations, strict=True):
        item.explained_by = [
            ExplainingEvent(
                item_id=event.item_id,
                timestamp=None if times is None else int(times[event.position]),
                score_change=event.score_change,
                attention=event.attention,
                shared_attributes=list(event.shared_attributes),
            )
            for event in explanation.events
        ]


def _recommendations(served: ServedModel, ranked: Ranked, user_id: str | None) -> Recommendations:
    return Recommendations(
        user_id=user_id,
        model_version=served.version,
        source=ranked.source,
        items=scored(served, ranked),
    )
