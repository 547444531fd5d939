"""``evorec serve``: open the store, load the model, run the app under uvicorn.

With ``workers`` > 1, uvicorn runs that many worker processes on one socket; each opens
the store and loads the model itself (the settings travel in ``EVOREC_SERVE_SETTINGS``),
the parent validates and seeds first. Metrics are summed over the workers through
prometheus-client's multiprocess mode, in a temporary ``PROMETHEUS_MULTIPROC_DIR``. Each
worker runs its own ``--watch``; a reload re-points the watched link, so that all follow.

Without an API key every write and admin endpoint is open to whoever reaches the port: the
service then listens on a loopback address only, unless ``allow_open`` says otherwise, and
says so at start-up.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path

import faiss
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from rich.console import Console

from evorec.errors import ConfigError
from evorec.serving.app import MAX_BODY_BYTES, MULTIPROC_DIR, Service, create_app
from evorec.serving.watch import ModelWatcher
from evorec.store import EventStore

SETTINGS_ENV = "EVOREC_SERVE_SETTINGS"
WORKER_HEALTHCHECK_S = 120  # seconds a worker may leave uvicorn's ping unanswered


class WorkerSettings(BaseModel):
    """What each worker process needs to build its service."""

    model_dir: Path
    db: str
    api_key: str | None
    watch: float | None
    workers: int
    models_root: Path | None
    max_body_bytes: int


def serve(
    model_dir: Path,
    *,
    db: str | None,
    host: str,
    port: int,
    api_key: str | None,
    console: Console,
    watch: float | None = None,
    workers: int = 1,
    models_root: Path | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    allow_open: bool = False,
) -> None:
    """Serve ``model_dir`` until interrupted; bad settings fail before the port opens.
    With ``watch`` (seconds), ``model_dir`` is polled and a new version swapped in (by
    every worker). Without ``api_key``, ``host`` must be a loopback address unless
    ``allow_open``."""
    exposed = not _is_loopback(host)
    if api_key is None and exposed and not allow_open:
        raise ConfigError(
            f"--host {host} without --api-key opens every write and admin endpoint to the "
            "network: set --api-key (or EVOREC_API_KEY), or pass --allow-open"
        )
    store = EventStore(db)
    try:
        service = Service(
            model_dir,
            store,
            api_key=api_key,
            workers=workers,
            watched_link=_link(model_dir, watch),
            models_root=models_root,
            max_body_bytes=max_body_bytes,
        )
        if service.seeded:
            console.print(f"store seeded with {service.seeded:,} training events")
        console.print(
            f"serving {service.current.model.name} model {service.current.version} on "
            f"http://{host}:{port} (store {store.display_url}"
            f"{f', {workers} worker processes' if workers > 1 else ''}"
            f"{', API key required for writes' if api_key else ''}"
            f"{f', watching {model_dir} every {watch:g}s' if watch else ''})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        if api_key is None:
            reach = "anyone who reaches this address" if exposed else "local processes only"
            console.print(
                f"no API key: writes and admin calls are open to {reach} "
                "(--api-key or EVOREC_API_KEY to require one)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if workers > 1:
            settings = WorkerSettings(
                model_dir=model_dir,
                db=store.url,
                api_key=api_key,
                watch=watch,
                workers=workers,
                models_root=service.models_root,
                max_body_bytes=max_body_bytes,
            )
            del service  # each worker loads its own
            _run_workers(settings, host, port)
            return
        _one_thread_per_request()
        watcher = ModelWatcher(service, model_dir, watch).start() if watch else None
        try:
            uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
        finally:
            if watcher is not None:
                watcher.stop()
    finally:
        store.close()


def _run_workers(settings: WorkerSettings, host: str, port: int) -> None:
    with tempfile.TemporaryDirectory(prefix="evorec-metrics-") as metrics_dir:
        # inherited by the spawned workers, read when they import prometheus-client
        os.environ[MULTIPROC_DIR] = metrics_dir
        os.environ[SETTINGS_ENV] = settings.model_dump_json()
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=settings.workers,
            # a worker loading its model on a busy machine may not answer the supervisor's
            # ping for seconds; it would be killed and restarted, again and again
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
            log_level="warning",
        )


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn's factory), from ``EVOREC_SERVE_SETTINGS``.
    Its watcher is a daemon thread that ends with the process."""
    settings = WorkerSettings.model_validate_json(os.environ[SETTINGS_ENV])
    _one_thread_per_request()
    store = EventStore(settings.db)
    service = Service(
        settings.model_dir,
        store,
        api_key=settings.api_key,
        workers=settings.workers,
        watched_link=_link(settings.model_dir, settings.watch),
        models_root=settings.models_root,
        max_body_bytes=settings.max_body_bytes,
    )
    if settings.watch:
        ModelWatcher(service, settings.model_dir, settings.watch).start()
    return create_app(service)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def _link(model_dir: Path, watch: float | None) -> Path | None:
    """The watched link a reload re-points, if the served path is one."""
    return model_dir if watch and model_dir.is_symlink() else None


def _one_thread_per_request() -> None:
    # requests run in parallel already, and idle OpenMP threads spinning between tiny
    # kernels cost more CPU than the kernels
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
