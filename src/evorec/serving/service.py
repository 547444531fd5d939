"""What one app serves: the loaded model, the event store, the settings and the metrics.

Endpoints reach the :class:`Service` of their app through the dependency in
``evorec.serving.routes.common``; ``serve --watch`` (``evorec.serving.watch``) swaps models
in through :meth:`Service.reload`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from evorec.serving.engine import ServedModel
from evorec.serving.guards import invalid
from evorec.store import EventStore

MAX_BODY_BYTES = 8 * 2**20  # holds a batch of 10,000 events with long ids
HISTORY_WINDOW = 10_000  # latest events a recommendation reads (at least the model's max_len)
# set for worker processes (evorec.serving.server): metric values live in files there
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Service:
    """The served model, the event store and the metrics of one app.

    ``current`` is replaced whole on reload; a request reads it once and keeps that model
    to the end. ``workers``: how many processes serve the same socket; ``watched_link``:
    the link that ``serve --watch`` polls, re-pointed by a reload; ``models_root``: the
    only directory ``POST /admin/reload`` loads models from (default: the parent of
    ``model_dir``); ``history_window``: the latest events a recommendation reads;
    ``max_body_bytes``: the largest request body accepted; ``forget_on_delete``: an
    erasure starts forgetting the user from the served model."""

    def __init__(
        self,
        model_dir: str | Path,
        store: EventStore,
        api_key: str | None = None,
        workers: int = 1,
        watched_link: Path | None = None,
        models_root: str | Path | None = None,
        history_window: int = HISTORY_WINDOW,
        max_body_bytes: int = MAX_BODY_BYTES,
        forget_on_delete: bool = False,
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.workers = workers
        self.watched_link = watched_link
        self.models_root = Path(models_root or Path(model_dir).absolute().parent).resolve()
        self.history_window = history_window
        self.max_body_bytes = max_body_bytes
        self.forget_on_delete = forget_on_delete
        self.multiprocess = MULTIPROC_DIR in os.environ
        self.current = ServedModel(model_dir)
        self.watch_error: str | None = None  # set by serve --watch while a version fails
        self._reload_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "evorec_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "evorec_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            registry=self.registry,
        )
        self.ingested = Counter(
            "evorec_events_ingested", "events committed to the store", registry=self.registry
        )
        self.model_info = Gauge(
            "evorec_model_info",
            "the served model (value 1; with workers, 1 while any worker serves it)",
            ["version"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.reloads = Counter(
            "evorec_model_reloads", "models swapped in by reload", registry=self.registry
        )
        self.model_info.labels(self.current.version).set(1)
        # a fresh store starts with the model's training events
        self.seeded = store.import_dataset(self.current.dataset)

    def window(self, served: ServedModel) -> int:
        """How many of a user's latest events a recommendation reads."""
        max_len = getattr(getattr(served.model, "config", None), "max_len", 0)
        return max(self.history_window, max_len if isinstance(max_len, int) else 0)

    def reload_target(self, model_dir: str | None) -> Path:
        """The directory a reload request names (default: the served one), resolved;
        403 when it lies outside the models root."""
        if model_dir is None:
            return self.current.model_dir
        try:
            target = Path(model_dir).expanduser().resolve()
        except (OSError, RuntimeError) as exc:
            raise invalid(["body", "model_dir"], f"not a usable path: {exc}") from None
        if self.models_root not in target.parents:
            raise HTTPException(
                403,
                f"reload loads model directories under {self.models_root} only "
                "(serve --models-root sets another)",
            )
        return target

    def reload(self, model_dir: str | Path | None) -> tuple[str, str]:
        """Load a model fully, then swap it in; returns (new, previous) versions."""
        with self._reload_lock:
            previous = self.current
            fresh = ServedModel(model_dir or previous.model_dir)
            self.current = fresh
            self.model_info.labels(previous.version).set(0)
            if not self.multiprocess:  # label sets cannot be removed from the shared files
                self.model_info.clear()
            self.model_info.labels(fresh.version).set(1)
            self.reloads.inc()
        return fresh.version, previous.version
