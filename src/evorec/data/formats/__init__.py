"""Input formats: :func:`read_events` and :func:`detect_format` over the format registry.

Each module of this package is one family of formats and registers one
:class:`~evorec.data.formats.registry.Format` record per format; importing the package
imports every module, so adding a format is adding a module (see docs/architecture.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from evorec.data.formats.registry import (
    FORMATS,
    Format,
    Probe,
    ReadOptions,
    detect_format,
    format_names,
    formats_help,
    read_events,
    register,
)
from evorec.data.formats.rows import DEFAULT_ENCODING, check_encoding
from evorec.data.formats.unisrec import read_item_text

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DEFAULT_ENCODING",
    "FORMATS",
    "Format",
    "Probe",
    "ReadOptions",
    "check_encoding",
    "detect_format",
    "format_names",
    "formats_help",
    "read_events",
    "read_item_text",
    "register",
]
