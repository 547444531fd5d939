"""``POST /admin/reload`` (behind the API key): swap another model directory in;
``POST /admin/forget`` / ``GET /admin/forget/status``: forget the erased users in the
background (``evorec.serving.forgetting``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException

from evorec.errors import EvorecError
from evorec.modeldir import point
from evorec.serving.forgetting import ForgetStatus, forgetting
from evorec.serving.guards import StrictJSONRoute, invalid
from evorec.serving.routes.common import ServiceDep, responses
from evorec.serving.schemas import Reloaded, ReloadIn
from evorec.serving.service import Service

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/admin/reload", responses=responses(403, 409, 415))
def reload(service: ServiceDep, body: ReloadIn | None = None) -> Reloaded:
    """Load the model directory (default: the one served; others only under the models
    root) and swap it in; requests in flight finish on the previous model. A directory
    that fails to load changes nothing (422). When the service watches a link, the
    link is re-pointed at the directory: the other worker processes swap it in within
    their poll interval."""
    link = reaching_every_worker(service, "a reload", "a reload")
    target = service.reload_target(body.model_dir if body else None)
    try:
        version, previous = service.reload(target)
    except Exception as exc:  # whatever a directory holds, the served model stays
        raise invalid(["body", "model_dir"], _load_failure(target, exc)) from None
    if link is not None:
        point(link, service.current.model_dir)
    return Reloaded(model_version=version, previous_version=previous)


@router.post("/admin/forget", status_code=202, responses=responses(409, 415, 503))
def start_forgetting(service: ServiceDep) -> ForgetStatus:
    """Start forgetting every erased user (``DELETE /users/{id}``) that the served model
    still holds, in the background: a sharded model retrains only their shards, any other
    model is retrained whole; the new version is swapped in as by ``/admin/reload`` (the
    watched link re-pointed), and the old versions that held them are removed. Users
    erased meanwhile are forgotten by the same run. The reply is the state at once."""
    reaching_every_worker(service, "a forget", "the forget")
    forgetting(service).start()
    return forgetting(service).status()


@router.get("/admin/forget/status", responses=responses(503))
def forgetting_status(service: ServiceDep) -> ForgetStatus:
    """Where forgetting stands: ``running``, ``idle`` or ``failed`` (with the error), the
    erased users the served model still holds and those forgotten so far."""
    return forgetting(service).status()


def _load_failure(target: Path, exc: Exception) -> str:
    if isinstance(exc, EvorecError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or target}: {exc.strerror or exc}"
    return f"{target}: cannot load the model directory ({type(exc).__name__}: {exc})"


def reaching_every_worker(service: Service, action: str, again: str) -> Path | None:
    """The watched link through which ``action`` reaches every worker process; 409 when
    several workers serve a model directory without one."""
    link = service.watched_link
    if service.workers > 1 and link is None:
        raise HTTPException(
            409,
            f"{service.workers} worker processes serve this model and {action} reaches "
            f"one: serve a link with --watch, then {again} re-points it",
        )
    return link
