"""The dashboard at ``/dashboard``: a page (HTML, JavaScript and CSS shipped in the package,
nothing fetched from elsewhere) and the JSON it reads, all read-only; the page's event
form posts to ``POST /events`` with the API key typed into it.

- ``GET /dashboard/api/users/{user_id}``: the user's interest timeline (``evorec.analytics``)
  over their latest stored events, the latest events, and the current recommendations
  (the same ranking as ``GET /users/{user_id}/recommendations``);
- ``GET /dashboard/api/users/{user_id}/explain?item=``: why an item is recommended, for
  models that explain;
- ``GET /dashboard/api/population``: shift rates, category trends, how far the
  recommendations follow and cover the catalogue, over the served model's histories
  (computed once per model version);
- ``GET /dashboard/api/service``: the model (version, lineage, evaluation metrics) and the
  service (requests, latency and events ingested, from the registry behind ``/metrics``).

These endpoints serve the page, not clients, so they stay out of the OpenAPI spec.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from evorec.analytics import ItemCategories, ShiftSettings, interest_timeline, population_summary
from evorec.analytics.categories import category_colors
from evorec.errors import DataError, UnknownIdError
from evorec.modeldir import METRICS, read_manifest
from evorec.serving.engine import ServedModel
from evorec.serving.guards import StrictJSONRoute
from evorec.serving.routes.common import ItemText, ServiceDep, UserId
from evorec.serving.routes.health import exported_registry
from evorec.serving.service import Service

ASSETS = {  # file of the package's dashboard folder -> media type
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
RECENT = 20  # latest events listed on a user's page
MAX_STEPS = 200  # latest events a user's timeline covers
POPULATION_USERS = 500

router = APIRouter(route_class=StrictJSONRoute, include_in_schema=False)


def _asset(name: str) -> str:
    return (resources.files("evorec.serving") / "dashboard" / name).read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse(_asset("index.html"))


@router.get("/dashboard/static/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return Response(_asset(name), media_type=ASSETS[name])


class _Analysis:
    """What the pages read of one served model: its categories and its population summary
    (computed at the first request for it)."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.categories = _categories(served)
        self._population: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def population(self) -> dict[str, Any]:
        with self._lock:
            if self._population is None:
                if self.categories is None:
                    raise DataError(_NO_CATEGORIES, field="category")
                dataset = self.served.dataset
                summary = population_summary(
                    self.served.model,
                    dataset.histories,
                    self.categories,
                    max_users=POPULATION_USERS,
                    by_time=dataset.has_time,
                )
                self._population = summary.to_dict() | {
                    "colors": category_colors(len(summary.categories))
                }
            return self._population


_NO_CATEGORIES = "the model's item table has no category column to read interests against"
_analyses: weakref.WeakKeyDictionary[Service, _Analysis] = weakref.WeakKeyDictionary()
_analyses_lock = threading.Lock()


def _analysis(service: Service) -> _Analysis:
    """The analysis of the model the service serves now (a reload makes a new one)."""
    served = service.current
    with _analyses_lock:
        found = _analyses.get(service)
        if found is None or found.served is not served:
            found = _analyses[service] = _Analysis(served)
        return found


def _categories(served: ServedModel) -> ItemCategories | None:
    try:
        return ItemCategories.from_dataset(served.dataset)
    except DataError:
        return None


@router.get("/dashboard/api/users/{user_id}")
def user_view(
    user_id: UserId,
    service: ServiceDep,
    top_n: Annotated[int, Query(ge=1, le=100)] = 10,
    window: Annotated[int, Query(ge=2, le=100)] = 6,
    threshold: Annotated[float, Query(gt=0, le=1)] = 0.5,
) -> dict[str, Any]:
    """The user's timeline, latest events and current recommendations."""
    analysis = _analysis(service)
    served = analysis.served
    events = service.store.history(user_id, last=service.window(served))
    if events.height == 0:
        raise UnknownIdError(f"unknown user id {user_id!r}: the store holds no event of it")
    history = served.history(events, user_id=user_id)
    ranked = served.recommend(history, top_n, np.unique(history.items), None)
    categories = analysis.categories
    timeline = None
    if categories is not None and history.lengths[0] > 0:
        settings = ShiftSettings(window, threshold)
        timeline = interest_timeline(
            served.model, history, categories, top_n=top_n, settings=settings, max_steps=MAX_STEPS
        ).to_dict(served.item_ids)
    titles = _titles(served)
    recent = events.tail(RECENT).reverse()
    return {
        "user_id": user_id,
        "model": served.model.name,
        "model_version": served.version,
        "events": events.height,
        "known_events": int(history.lengths[0]),
        "colors": category_colors(categories.n_categories) if categories else [],
        "timeline": timeline,
        "timeline_note": None if categories else _NO_CATEGORIES,
        "history": [
            _item(served, categories, titles, row["item_id"])
            | {"timestamp": row["timestamp"], "behavior": row["behavior"]}
            for row in recent.iter_rows(named=True)
        ],
        "recommendations": [
            _item(served, categories, titles, str(served.item_ids[item]))
            | {"rank": rank, "score": round(float(score), 4)}
            for rank, (item, score) in enumerate(zip(ranked.items, ranked.scores, strict=True), 1)
        ],
        "source": ranked.source,
        "explains": callable(getattr(served.model, "explain", None)),
    }


@router.get("/dashboard/api/users/{user_id}/explain")
def explain_view(
    user_id: UserId, item: Annotated[ItemText, Query()], service: ServiceDep
) -> dict[str, Any]:
    """The events of the user's stored history that drive ``item`` most."""
    served = service.current
    explain = getattr(served.model, "explain", None)
    if explain is None:
        raise HTTPException(404, f"the {served.model.name} model gives no explanations")
    events = service.store.history(user_id, last=service.window(served))
    if events.height == 0:
        raise UnknownIdError(f"unknown user id {user_id!r}: the store holds no event of it")
    history = served.history(events, user_id=user_id)
    if history.lengths[0] == 0:
        raise DataError("the user has no event of an item the model knows", field="user_id")
    explanation = explain(
        history=[served.item_ids[i] for i in history.items],
        timestamps=None if history.timestamps is None else history.timestamps.tolist(),
        item=served.item_ids[served.item_index(item)],
        top=5,
    )
    return _plain(explanation) | {"user_id": user_id}


@router.get("/dashboard/api/population")
def population_view(service: ServiceDep) -> dict[str, Any]:
    """The population summary of the served model's histories."""
    analysis = _analysis(service)
    return {"model_version": analysis.served.version} | analysis.population()


@router.get("/dashboard/api/service")
def service_view(service: ServiceDep) -> dict[str, Any]:
    """The served model and the service's counters."""
    served = service.current
    manifest = read_manifest(served.model_dir)
    dataset = served.dataset
    return {
        "model": served.model.name,
        "model_version": served.version,
        "model_dir": str(served.model_dir),
        "evorec_version": manifest.get("evorec_version"),
        "lineage": manifest.get("lineage", []),
        "cutoff": manifest.get("cutoff"),
        "metrics": _metrics(served),
        "dataset": {
            "name": dataset.name,
            "users": dataset.n_users,
            "items": dataset.n_items,
            "events": dataset.n_events,
        },
        "keyed": service.api_key is not None,
        "workers": service.workers,
        "behaviors": list(dataset.behaviors),
    } | _counters(service)


def _metrics(served: ServedModel) -> dict[str, Any] | None:
    file = served.model_dir / METRICS
    if not file.is_file():
        return None
    try:
        recorded = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _counters(service: Service) -> dict[str, Any]:
    """Requests by route (count, statuses, mean and p95 latency) and events ingested, read
    from the registry that ``/metrics`` exports."""
    registry = exported_registry(service)
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    ingested = 0.0
    for family in registry.collect():
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("method", ""), labels.get("route", ""))
            if sample.name == "evorec_http_requests_total":
                entry = routes.setdefault(key, _route(key))
                entry["requests"] += int(sample.value)
                entry["statuses"][labels["status"]] = int(sample.value)
            elif sample.name == "evorec_http_request_duration_seconds_sum":
                routes.setdefault(key, _route(key))["seconds"] = sample.value
            elif sample.name == "evorec_http_request_duration_seconds_bucket":
                buckets.setdefault(key, []).append((float(labels["le"]), sample.value))
            elif sample.name == "evorec_events_ingested_total":
                ingested += sample.value
    rows = []
    for key, entry in routes.items():
        count = entry["requests"]
        seconds = entry.pop("seconds", 0.0)
        entry["mean_ms"] = round(1000 * seconds / count, 2) if count else None
        entry["p95_ms"] = _quantile_bound(sorted(buckets.get(key, [])), 0.95)
        rows.append(entry)
    rows.sort(key=lambda row: -row["requests"])
    return {
        "requests": sum(row["requests"] for row in rows),
        "routes": rows,
        "events_ingested": int(ingested),
    }


def _route(key: tuple[str, str]) -> dict[str, Any]:
    return {"method": key[0], "route": key[1], "requests": 0, "statuses": {}}


def _quantile_bound(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding quantile ``q``."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    bound = next(le for le, count in buckets if count >= q * total)
    return None if math.isinf(bound) else round(1000 * bound, 2)


def _titles(served: ServedModel) -> list[Any] | None:
    items = served.dataset.items
    if items is None or "title" not in items.columns:
        return None
    return items.sort("item_idx")["title"].to_list()


def _item(
    served: ServedModel,
    categories: ItemCategories | None,
    titles: list[Any] | None,
    item_id: str,
) -> dict[str, Any]:
    """An item as the page shows it: id, title and categories (null for an item the
    model does not know)."""
    index = served.item_lookup.get(item_id)
    if index is None:
        return {"item_id": item_id, "known": False, "title": None, "categories": []}
    return {
        "item_id": served.item_ids[index],
        "known": True,
        "title": titles[index] if titles else None,
        "categories": categories.labels(index) if categories else [],
    }


def _plain(explanation: Any) -> dict[str, Any]:
    """An explanation as JSON: its ``to_dict`` when it has one."""
    to_dict = getattr(explanation, "to_dict", None)
    if callable(to_dict):
        record = to_dict()
        if isinstance(record, dict):
            return record
    return {"explanation": str(explanation)}
