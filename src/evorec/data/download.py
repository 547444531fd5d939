"""Download public datasets from their official homes into a local cache.

Archives are streamed to a temporary file beside the cache, checked against the md5 that
GroupLens publishes next to each zip (``<name>.zip.md5``) and against a pinned sha256 when
the registry has one, extracted to a temporary directory and moved into place with
``os.replace``: the cache never holds a partial dataset, and a cached dataset is returned
without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import platformdirs
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from evorec.errors import DataError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
CHUNK_SIZE = 1 << 16
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DatasetInfo:
    """A downloadable dataset: ``<base_url>/<name>.zip``, checked against ``<name>.zip.md5``."""

    name: str
    description: str
    sha256: str | None = None  # pinned digest of the zip, when known

    def url(self, base_url: str) -> str:
        """The archive's URL under ``base_url``."""
        return f"{base_url.rstrip('/')}/{self.name}.zip"


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("ml-100k", "MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies (1998)"),
        DatasetInfo("ml-1m", "MovieLens 1M: 1,000,209 ratings, 6,040 users, 3,706 movies (2003)"),
        DatasetInfo("ml-latest-small", "MovieLens latest small: 100,836 ratings, 610 users (2018)"),
        DatasetInfo("ml-20m", "MovieLens 20M: 20,000,263 ratings, 138,493 users (2016)"),
    )
}


def data_home() -> Path:
    """The dataset cache: ``$EVOREC_HOME``, else the user cache directory for ``evorec``."""
    home = os.environ.get("EVOREC_HOME")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("evorec"))


def download(
    name: str,
    *,
    home: str | Path | None = None,
    base_url: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Download and extract dataset ``name`` unless cached; return its directory.

    The directory is ``<home>/<name>`` (``home`` defaults to :func:`data_home`). The host
    is ``base_url``, else ``$EVOREC_DOWNLOAD_URL``, else GroupLens. ``force`` downloads
    again and replaces the cached copy.
    """
    info = DATASETS.get(name)
    if info is None:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    root = Path(home).expanduser() if home is not None else data_home()
    target = root / name
    if target.is_dir() and not force:
        return target
    url = info.url(base_url or os.environ.get("EVOREC_DOWNLOAD_URL") or GROUPLENS_URL)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the dataset directory: {exc}", path=root) from exc
    expected_md5 = _fetch_md5(f"{url}.md5")
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{name}-", suffix=".zip.part")
    archive = Path(tmp_name)
    extracted: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            md5, sha256 = _stream(url, out, progress)
        if md5 != expected_md5:
            raise DataError(f"md5 mismatch: expected {expected_md5}, got {md5}", path=url)
        if info.sha256 is not None and sha256 != info.sha256:
            raise DataError(f"sha256 mismatch: expected {info.sha256}, got {sha256}", path=url)
        extracted = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
        _extract(archive, extracted, url)
        _move_into_place(_dataset_root(extracted), target, force)
    finally:
        archive.unlink(missing_ok=True)
        if extracted is not None:
            shutil.rmtree(extracted, ignore_errors=True)
    return target


def _fetch_md5(url: str) -> str:
    """The md5 digest in a checksum file (``MD5 (f) = <hex>`` or ``<hex>  f``)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"cannot download the checksum: {_reason(exc)}", path=url) from exc
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if match is None:
        raise DataError("no md5 digest in the checksum file", path=url)
    return match.group(0).lower()


def _stream(url: str, out: BinaryIO, show_progress: bool) -> tuple[str, str]:
    """Copy ``url`` to the binary file ``out`` in chunks; return its md5 and sha256."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                disable=not show_progress,
                transient=True,
            ) as bar:
                task = bar.add_task(url.rsplit("/", 1)[-1], total=total)
                while chunk := response.read(CHUNK_SIZE):
                    out.write(chunk)
                    md5.update(chunk)
                    sha256.update(chunk)
                    bar.advance(task, len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"cannot download: {_reason(exc)}", path=url) from exc
    return md5.hexdigest(), sha256.hexdigest()


def _extract(archive: Path, dest: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # zipfile drops absolute paths and ".." components
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot extract the archive: {exc}", path=url) from exc


def _dataset_root(extracted: Path) -> Path:
    """The archive's single top-level directory, or the extraction directory itself."""
    entries = [p for p in extracted.iterdir() if p.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted


def _move_into_place(source: Path, target: Path, force: bool) -> None:
    """Atomically rename ``source`` to ``target``; with ``force`` replace an existing one."""
    old = None
    try:
        if force and target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-old-"))
            os.replace(target, old / target.name)
        os.replace(source, target)
    except OSError as exc:
        restored = old is not None and (old / target.name).exists()
        if restored:
            os.replace(old / target.name, target)
        if restored or not target.is_dir():  # else a concurrent download finished first
            raise DataError(f"cannot move the dataset into place: {exc}", path=target) from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
