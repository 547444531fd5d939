"""The REST service: FastAPI over a served model and the event store."""

from evorec.serving.app import create_app
from evorec.serving.engine import ServedModel
from evorec.serving.service import Service

__all__ = ["ServedModel", "Service", "create_app"]
