"""The REST service: FastAPI over a served model and the event store."""

from evorec.serving.app import Service, create_app
from evorec.serving.engine import ServedModel

__all__ = ["ServedModel", "Service", "create_app"]
