"""Atomic file and directory writes: a reader (or a restart after a crash) sees the
previous file or directory or the whole new one, never a part; tables written as a stream
of frames."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import polars as pl


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


FRAME_FORMATS = (".csv", ".tsv", ".parquet", ".jsonl", ".json")


def write_frames(path: str | Path, frames: Iterable[pl.DataFrame]) -> int:
    """Write ``frames`` (one schema, at least one frame) to ``path`` in the format its
    extension names (:data:`FRAME_FORMATS`), atomically, holding one frame in memory at a
    time; a ``.json`` document is the exception, built whole. Returns the rows written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FRAME_FORMATS:
        raise ValueError(f"cannot write {suffix or 'a file without an extension'}")
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        stream = iter(frames)
        first = next(stream, None)
        if first is None:
            raise ValueError("no frames to write")
        if suffix == ".json":
            whole = pl.concat([first, *stream])
            rows = whole.height
            whole.write_json(tmp)
            return
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with pq.ParquetWriter(tmp, first.to_arrow().schema) as writer:
                for frame in itertools.chain([first], stream):
                    writer.write_table(frame.to_arrow())
                    rows += frame.height
            return
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            for index, frame in enumerate(itertools.chain([first], stream)):
                if suffix == ".jsonl":
                    frame.write_ndjson(handle)
                else:
                    frame.write_csv(
                        handle,
                        separator="\t" if suffix == ".tsv" else ",",
                        include_header=index == 0,
                    )
                rows += frame.height

    write_atomic(path, write)
    return rows
