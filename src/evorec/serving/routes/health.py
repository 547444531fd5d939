"""``GET /health`` and ``GET /metrics`` (Prometheus text, summed over worker processes)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from evorec.serving.guards import StrictJSONRoute
from evorec.serving.routes.common import ServiceDep, responses
from evorec.serving.schemas import Health

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/health", responses=responses(503))
def health(service: ServiceDep) -> Health:
    service.store.ping()
    return Health(
        status="ok",
        model_version=service.current.version,
        model_update="failing" if service.watch_error else "ok",
        model_update_error=service.watch_error,
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format; with worker processes, the sum over all of them."""
    registry = service.registry
    if service.multiprocess:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
