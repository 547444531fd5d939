"""``GET /health`` and ``GET /metrics`` (Prometheus text, summed over worker processes)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from evorec.serving.guards import StrictJSONRoute
from evorec.serving.routes.common import ServiceDep, responses
from evorec.serving.schemas import Health
from evorec.serving.service import Service

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
    return Response(generate_latest(exported_registry(service)), media_type=CONTENT_TYPE_LATEST)


def exported_registry(service: Service) -> CollectorRegistry:
    """The metrics ``/metrics`` exports: the service's, or with worker processes the
    collector summing every worker's files."""
    if not service.multiprocess:
        return service.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
