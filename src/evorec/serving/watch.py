"""Model directory watch: the service reloads when the directory it serves from changes.

The watched path is a model directory or a link to one (``evorec update --link``): each
poll compares the version it names (directory name + manifest digest) with the served one
and, when they differ, loads the directory the link resolves to and swaps it in through
:meth:`Service.reload`; requests in flight finish on the previous model. A version that
fails to load (broken files, a link to nowhere) is logged once, kept as the watcher's
:attr:`ModelWatcher.error` (and the service's ``watch_error``) and retried at every poll
until it loads or the path names another version; no error ends the polling thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import polars as pl

from evorec.errors import EvorecError
from evorec.modeldir import model_version
from evorec.serving.service import Service

log = logging.getLogger(__name__)

# what a poll may raise beyond the known load errors (a polars panic is no Exception)
UNEXPECTED = (Exception, pl.exceptions.PanicException)


class ModelWatcher:
    """Polls ``path`` every ``interval`` seconds in a daemon thread (:meth:`start`)."""

    def __init__(self, service: Service, path: str | Path, interval: float = 2.0) -> None:
        self.service = service
        self.path = Path(path)
        self.interval = interval
        self.failed: str | None = None  # the version that last failed to load
        self.error: str | None = None  # why it failed; None while the watched model is served
        self.polls = 0  # polls made by the thread
        self._unresolved = False  # the previous poll found no version behind the path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publish(None)

    def check(self) -> str | None:
        """Reload when ``path`` names another version; returns the new version, if any."""
        try:
            target = self.path.resolve(strict=True)
            version = model_version(target)
        except OSError as exc:
            # a directory being replaced lacks its manifest for a moment: report it only
            # when the next poll still finds none
            if self._unresolved:
                reason = exc.strerror or type(exc).__name__
                self._fail(str(self.path), f"{self.path}: no model directory behind it ({reason})")
            self._unresolved = True
            return None
        self._unresolved = False
        if version == self.service.current.version:
            self._recover()
            return None
        try:
            new, previous = self.service.reload(target)
        except (EvorecError, OSError) as exc:
            self._fail(version, f"cannot load {target}: {exc}")
            return None
        except UNEXPECTED as exc:  # an error no check names: still never the thread's end
            self._fail(version, f"cannot load {target}: {type(exc).__name__}: {exc}", trace=True)
            return None
        self._recover()
        log.info("watch: model %s replaced %s", new, previous)
        return new

    def start(self) -> ModelWatcher:
        self._thread = threading.Thread(target=self._run, name="evorec-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the polling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except UNEXPECTED:  # check reports its own failures; this guards the thread
                log.exception("watch: poll of %s failed", self.path)
            self.polls += 1

    def _fail(self, version: str, message: str, trace: bool = False) -> None:
        if self.failed != version:
            log.warning("watch: %s", message, exc_info=trace)
            self.failed = version
        self._publish(message)

    def _recover(self) -> None:
        self.failed = None
        self._publish(None)

    def _publish(self, message: str | None) -> None:
        self.error = message
        self.service.watch_error = message  # read by the health reply
