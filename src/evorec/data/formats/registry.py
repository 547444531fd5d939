"""The registry of input formats: one :class:`Format` record per format, and the reading,
detection and error text that come from it.

A format module of this package registers its records at import (``register(Format(...))``);
``evorec.data.formats`` imports every module of the package, so a new format is one new file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import polars as pl

from evorec.data.formats.rows import DEFAULT_ENCODING, check_encoding, head, polars_problem
from evorec.data.schema import RawData
from evorec.errors import ConfigError, DataError

BAD_ROW_POLICIES = ("drop", "error")


@dataclass(frozen=True)
class ReadOptions:
    """What the caller of :func:`read_events` chose, handed to every reader.

    ``columns`` and ``sep`` are only given to formats that take a column mapping."""

    columns: dict[str, str] | None = None
    sep: str | None = None
    on_bad_rows: str = "drop"
    encoding: str = DEFAULT_ENCODING


class Probe:
    """What format detection looks at: the path and, read once when a detector asks, its
    first lines (a file) or its file names (a directory)."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.name = path.name.lower()
        self.suffix = path.suffix.lower()
        self.is_dir = path.is_dir()

    @cached_property
    def head(self) -> list[str]:
        """Up to 20 non-blank lines from the start of the file."""
        return head(self.path, encoding=self.encoding)

    @cached_property
    def names(self) -> set[str]:
        """The names in the directory."""
        return {p.name for p in self.path.iterdir()} if self.is_dir else set()


Reader = Callable[[Path, ReadOptions], RawData]
Detector = Callable[[Probe], bool]


@dataclass(frozen=True)
class Format:
    """One input format.

    ``read(path, options)`` returns its events (and side tables); ``detect(probe)`` says
    whether a path looks like it; ``layout`` says in a few words what that is, named when no
    format claims a directory. ``reads_directory``: the path may be a directory (the reader
    then finds its files). ``takes_columns``: ``columns=`` and ``sep=`` apply. A ``fallback``
    format (csv, tsv) is detected only when no other format claims the file."""

    name: str
    read: Reader
    detect: Detector
    layout: str
    reads_directory: bool = False
    takes_columns: bool = False
    fallback: bool = False


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (a name may be registered once)."""
    if fmt.name in FORMATS or fmt.name == "auto":
        raise ValueError(f"the format name {fmt.name!r} is taken")
    FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> list[str]:
    """Every registered format, by name."""
    return sorted(FORMATS)


def formats_help() -> str:
    """The accepted values of a ``--format`` option."""
    return f"auto, {', '.join(format_names())}"


def read_events(
    path: str | Path,
    format: str = "auto",
    *,
    columns: dict[str, str] | None = None,
    sep: str | None = None,
    on_bad_rows: str = "drop",
    encoding: str = DEFAULT_ENCODING,
) -> RawData:
    """Read the events (and item/user tables where the format has them) at ``path``.

    ``format`` is a registered format name or ``"auto"`` (see :func:`detect_format`).
    For the formats that take a column mapping (csv, tsv, parquet, jsonl) ``columns`` maps
    canonical names (``user_id``, ``item_id``, ``timestamp``, ``value``, ``behavior``) to
    source columns; canonical columns it leaves out are guessed from common names.
    Headerless csv/tsv files name their columns ``"1"``, ``"2"``... ``sep`` overrides the
    csv/tsv separator (it may be several characters, e.g. ``"::"``). ``on_bad_rows`` is
    ``"drop"`` (keep nulls for preprocessing to drop) or ``"error"`` (raise at the first bad
    row). ``encoding`` is the text encoding of the data files (a Python codec name); bytes
    that are not valid in it are a :class:`~evorec.errors.DataError` naming their line and
    offset.
    """
    path = Path(path)
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ConfigError(f"on_bad_rows must be 'drop' or 'error', not {on_bad_rows!r}")
    encoding = check_encoding(encoding)
    if not path.exists():
        raise DataError("no such file or directory", path=path)
    name = detect_format(path, encoding) if format == "auto" else format
    fmt = FORMATS.get(name)
    if fmt is None:
        raise DataError(f"unknown format {format!r}; supported formats: {formats_help()}")
    if not fmt.takes_columns and (columns is not None or sep is not None):
        mapped = ", ".join(f.name for f in FORMATS.values() if f.takes_columns)
        raise ConfigError(f"columns= and sep= apply only to the formats {mapped}, not {name}")
    if path.is_dir() and not fmt.reads_directory:
        raise DataError(f"the {name} format reads a file, not a directory", path=path)
    options = ReadOptions(columns, sep, on_bad_rows, encoding)
    try:
        return fmt.read(path, options)
    except (OSError, EOFError, pl.exceptions.PolarsError) as exc:  # EOFError: cut-off gzip
        raise DataError(f"cannot read: {polars_problem(exc)}", path=path) from exc


def detect_format(path: str | Path, encoding: str = DEFAULT_ENCODING) -> str:
    """Guess the format of ``path`` from directory contents, file name and first lines: the
    first registered format whose detector claims it, the fallback formats last."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", path=path)
    probe = Probe(path, check_encoding(encoding))
    candidates = [f for f in FORMATS.values() if f.reads_directory or not probe.is_dir]
    for fmt in sorted(candidates, key=lambda f: f.fallback):
        if fmt.detect(probe):
            return fmt.name
    if probe.is_dir:
        layouts = "; ".join(f.layout for f in candidates)
        raise DataError(
            f"cannot detect the format of this directory (expected {layouts}); "
            f"pass one of the formats {', '.join(format_names())}",
            path=path,
        )
    raise DataError(
        f"cannot detect the format from the file name; pass one of the formats "
        f"{', '.join(format_names())}",
        path=path,
    )
