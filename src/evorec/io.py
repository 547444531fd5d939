"""Atomic file and directory writes: a reader (or a restart after a crash) sees the
previous file or directory or the whole new one, never a part."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Create ``path`` by ``write(tmp)`` on a temporary file in the same directory (same
    suffix, so writers that go by the extension pick the right format), flushed to disk,
    then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_atomic_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_atomic_dir(
    path: str | Path, write: Callable[[Path], object], keep: Iterable[str] = ()
) -> Path:
    """Create directory ``path`` by ``write(tmp)`` on a temporary directory beside it, its
    files flushed to disk, then renamed into place (an existing ``path`` is moved aside
    first and removed after). ``keep`` names files of the existing ``path`` that the new
    directory takes over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old: Path | None = None
    try:
        write(tmp)
        for name in keep:
            if (path / name).is_file():
                os.replace(path / name, tmp / name)
        for file in tmp.rglob("*"):
            if file.is_file():
                with file.open("rb+") as handle:
                    os.fsync(handle.fileno())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old / path.name, path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path
