"""``GET /items/{item_id}/similar``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from evorec.serving.guards import StrictJSONRoute
from evorec.serving.routes.common import ItemId, ServiceDep, attributes, responses, scored
from evorec.serving.schemas import MAX_K, Similar

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/items/{item_id}/similar", responses=responses(404))
async def similar_items(
    item_id: ItemId,
    request: Request,
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
) -> Similar:
    """The items whose vectors are closest (cosine); ``attr.<column>=<value>`` filters."""
    served = service.current
    item = served.item_index(item_id)
    ranked = served.similar(item, k, served.allowed(None, attributes(request)))
    return Similar(
        item_id=served.item_ids[item],
        model_version=served.version,
        items=scored(served, ranked),
    )
