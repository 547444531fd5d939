"""The service's endpoints, one module per resource, each with an ``APIRouter``.

``create_app`` (``evorec.serving.app``) includes every router of :data:`OPEN` as it is,
and every router of :data:`KEYED` behind the API key (when the service has one) and the
JSON-only body check. A new endpoint is a function on a router; a new resource is a
module here with its router, named once below.
"""

from fastapi import APIRouter

from evorec.serving.routes import (
    admin,
    dashboard,
    events,
    health,
    items,
    recommendations,
    users,
)

OPEN: tuple[APIRouter, ...] = (
    recommendations.router,
    items.router,
    users.router,
    health.router,
    dashboard.router,
)
KEYED: tuple[APIRouter, ...] = (events.router, users.writes, admin.router)
