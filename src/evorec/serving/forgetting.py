"""The service's forgetting: erased users leave the served model's weights and files.

``DELETE /users/{id}`` erases a user from the store at once (and logs the erasure);
``POST /admin/forget`` then starts, in a background thread, a forget of every erased user
the served model still holds (``evorec.training.forget``: a sharded model retrains only
their shards), swaps the new version in through the same atomic reload as
``/admin/reload``, re-points the watched link (so other worker processes follow) and
removes the old versions that held them. Users erased while it runs are picked up by the
same thread before it stops. ``GET /admin/forget/status`` reports where it stands. Messages and
logs give counts and paths, never user ids.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Literal

import polars as pl
from pydantic import BaseModel

from evorec.modeldir import point
from evorec.serving.service import Service
from evorec.training.forget import NothingToForget, forget, remove_versions_holding

log = logging.getLogger(__name__)


class ForgetStatus(BaseModel):
    state: Literal["idle", "running", "failed"]
    pending_users: int  # erased users the served model still holds
    forgotten_users: int  # forgotten by this service since it started
    model_version: str
    error: str | None = None


class Forgetting:
    """The background forgetting of one :class:`Service` (one thread at a time)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.forgotten = 0
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def held(self) -> list[str]:
        """The erased users the served model still holds (their text ids)."""
        ids = self.service.current.dataset.user_ids.cast(pl.Utf8).to_list()
        return self.service.store.erased_among(ids)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start forgetting unless it runs already or nothing is held; whether it runs."""
        with self._lock:
            if self.running():
                return True
            if not self.held():
                return False
            self.error = None
            self._thread = threading.Thread(target=self._run, name="evorec-forget", daemon=True)
            self._thread.start()
            return True

    def status(self) -> ForgetStatus:
        running = self.running()
        state = "running" if running else "failed" if self.error else "idle"
        return ForgetStatus(
            state=state,
            pending_users=len(self.held()),
            forgotten_users=self.forgotten,
            model_version=self.service.current.version,
            error=self.error,
        )

    def _run(self) -> None:
        try:
            while (users := self.held()) and self._forget(users):
                pass
        except Exception as exc:  # the service keeps serving the version it has
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("forgetting %d erased users failed: %s", len(self.held()), self.error)

    def _forget(self, users: list[str]) -> bool:
        """Forget ``users`` from the served version and swap the result in; whether there
        was anything to forget."""
        source = self.service.current.model_dir.resolve()
        try:
            result = forget(source, users, keep_old=True)
        except NothingToForget:
            return False
        link = self.service.watched_link
        if link is not None:
            point(link, result.out)
        self.service.reload(result.out)
        removed = remove_versions_holding(source, users, keep=result.out.resolve())
        self.forgotten += result.users
        log.warning(
            "forgot %d erased users: %s swapped in, %d old versions removed",
            result.users,
            result.out,
            len(removed),
        )
        return True


_forgetting: weakref.WeakKeyDictionary[Service, Forgetting] = weakref.WeakKeyDictionary()
_forgetting_lock = threading.Lock()


def forgetting(service: Service) -> Forgetting:
    """The one :class:`Forgetting` of ``service``."""
    with _forgetting_lock:
        if service not in _forgetting:
            _forgetting[service] = Forgetting(service)
        return _forgetting[service]
