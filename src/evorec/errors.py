"""Errors shown to users: each names the file, line or field at fault."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError


class EvorecError(Exception):
    """Base class for errors reported to the user without a traceback."""


class DataError(EvorecError):
    """Input data that cannot be read or is malformed."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        where = []
        if self.path:
            where.append(self.path if line is None else f"{self.path}:{line}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(EvorecError):
    """An invalid configuration value or override."""


class ModelDirError(EvorecError):
    """A model directory that is missing files or was written by an incompatible version."""


class UnknownIdError(EvorecError):
    """A user or item id that the model has never seen."""


class StoreError(EvorecError):
    """An event store that cannot be opened, migrated or reached."""


class NonFiniteError(EvorecError):
    """A loss or score that became NaN or infinite: the model diverged."""


def first_validation_error(exc: ValidationError, *, quoted: bool = False) -> str:
    """The first problem pydantic found, as ``field.path: message`` (``'field.path': ...``
    with ``quoted``); a field that the model does not have is an "unknown field"."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
    if not where:
        return message
    return f"'{where}': {message}" if quoted else f"{where}: {message}"
