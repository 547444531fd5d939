"""Model directory watch: the service reloads when the directory it serves from changes.

The watched path is a model directory or a link to one (``evorec update --link``): each
poll compares the version it names (directory name + manifest digest) with the served one
and, when they differ, loads the directory the link resolves to and swaps it in through
:meth:`Service.reload`; requests in flight finish on the previous model. A directory
that fails to load (half written, broken) is reported once and retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from evorec.errors import EvorecError
from evorec.serving.app import Service
from evorec.serving.engine import model_version

log = logging.getLogger(__name__)


class ModelWatcher:
    """Polls ``path`` every ``interval`` seconds in a daemon thread (:meth:`start`)."""

    def __init__(self, service: Service, path: str | Path, interval: float = 2.0) -> None:
        self.service = service
        self.path = Path(path)
        self.interval = interval
        self.failed: str | None = None  # the version that last failed to load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> str | None:
        """Reload when ``path`` names another version; returns the new version, if any."""
        try:
            target = self.path.resolve(strict=True)
            version = model_version(target)
        except OSError:
            return None  # being replaced: the next poll sees the new directory
        if version == self.service.current.version:
            return None
        try:
            new, previous = self.service.reload(target)
        except (EvorecError, OSError) as exc:
            if self.failed != version:
                log.warning("watch: cannot load %s: %s", target, exc)
                self.failed = version
            return None
        self.failed = None
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
