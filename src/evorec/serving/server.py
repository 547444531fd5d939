"""``evorec serve``: open the store, load the model, run the app under uvicorn.

With ``workers`` > 1, uvicorn runs that many worker processes on one socket; each opens
the store and loads the model itself (the settings travel in ``EVOREC_SERVE_SETTINGS``),
the parent validates and seeds first. Metrics are summed over the workers through
prometheus-client's multiprocess mode, in a temporary ``PROMETHEUS_MULTIPROC_DIR``. Each
worker runs its own ``--watch``; a reload re-points the watched link, so that all follow.

Without an API key every write and admin endpoint is open to whoever reaches the port: the
service then listens on a loopback address only, unless ``allow_open`` says otherwise, and
says so at start-up.

:func:`running_server` starts ``evorec serve`` as a child process on a free loopback port
and waits until it answers; :func:`running_app` serves an app built in this process from a
thread: what tests and benchmarks serve through.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import httpx
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from rich.console import Console

from evorec.errors import ConfigError
from evorec.serving.app import WORKER_HEADER, create_app
from evorec.serving.service import MAX_BODY_BYTES, MULTIPROC_DIR, Service
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
    forget_on_delete: bool = False,
) -> None:
    """Serve ``model_dir`` until interrupted; bad settings fail before the port opens.
    With ``watch`` (seconds), ``model_dir`` is polled and a new version swapped in (by
    every worker). Without ``api_key``, ``host`` must be a loopback address unless
    ``allow_open``. ``forget_on_delete``: each erasure starts the background forgetting of
    ``POST /admin/forget`` (one worker: concurrent forgets in several processes would
    each swap in a version that still holds the others' users)."""
    exposed = not _is_loopback(host)
    if api_key is None and exposed and not allow_open:
        raise ConfigError(
            f"--host {host} without --api-key opens every write and admin endpoint to the "
            "network: set --api-key (or EVOREC_API_KEY), or pass --allow-open"
        )
    if forget_on_delete and workers > 1:
        raise ConfigError(
            f"--forget-on-delete runs one forget at a time in one process, not in {workers} "
            "workers: serve with --workers 1, or call POST /admin/forget after erasures"
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
            forget_on_delete=forget_on_delete,
        )
        if service.seeded:
            console.print(f"store seeded with {service.seeded:,} training events")
        console.print(
            f"serving {service.current.model.name} model {service.current.version} on "
            f"http://{host}:{port} (store {store.display_url}"
            f"{f', {workers} worker processes' if workers > 1 else ''}"
            f"{', API key required for writes' if api_key else ''}"
            f"{', erased users forgotten from the model' if forget_on_delete else ''}"
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


class ServerNotReady(RuntimeError):
    """``evorec serve`` exited or did not answer ``/health`` in time (its output attached)."""


@dataclass(frozen=True)
class RunningServer:
    """An ``evorec serve`` child process: its ``url`` and the file holding its output."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    model_dir: Path,
    db: str,
    *options: str,
    port: int | None = None,
    workers: int = 1,
    log: Path | None = None,
    timeout: float = 300.0,
) -> Iterator[RunningServer]:
    """``python -m evorec.cli.main serve`` on 127.0.0.1 (``port``, default a free one) with
    ``options``, entered once ``/health`` answers 200 (from each of ``workers`` worker
    processes, told apart by their ``X-Evorec-Worker`` header); stopped on exit (terminated,
    killed when it outlasts ``timeout``), whatever state the block left it in. ``log``
    keeps the output (default: a temporary file); :class:`ServerNotReady` names what went
    wrong when the server exits or stays silent for ``timeout`` seconds."""
    port = free_port() if port is None else port
    command = [sys.executable, "-m", "evorec.cli.main", "serve", "--model-dir", str(model_dir)]
    command += ["--db", db, "--port", str(port), *options]
    if workers > 1:
        command += ["--workers", str(workers)]
    with tempfile.TemporaryDirectory(prefix="evorec-serve-") as scratch:
        log = log or Path(scratch) / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # output readable while it runs
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        server = RunningServer(process, f"http://127.0.0.1:{port}", port, log)
        try:
            _wait_for_health(server, workers, timeout)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def running_app(app: FastAPI, timeout: float = 120.0) -> Iterator[str]:
    """``app`` under uvicorn on a free 127.0.0.1 port, in a thread of this process; yields
    its URL once uvicorn listens, stops it on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ServerNotReady(f"uvicorn did not start on port {port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


def _wait_for_health(server: RunningServer, workers: int, timeout: float) -> None:
    answered: set[str | None] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerNotReady(
                f"evorec serve exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            response = httpx.get(f"{server.url}/health", timeout=2)
        except httpx.TransportError:
            response = None  # not listening yet
        if response is not None and response.status_code == 200:
            answered.add(response.headers.get(WORKER_HEADER))
            if len(answered) >= workers:
                return
        time.sleep(0.1)
    raise ServerNotReady(
        f"evorec serve did not answer /health within {timeout:g}s:\n{server.output()}"
    )
