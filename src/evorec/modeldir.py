"""The model directory: its files, manifest, version, cut-off, lineage, shards and links.

A model directory holds ``evorec-model.json`` (the manifest), ``config.yaml`` (model
settings), ``state.pt`` (parameters), ``dataset/`` (id mappings and histories), and beside
them ``run.yaml`` (the run config), ``metrics.json`` and, after training with a model
directory as output, ``checkpoint.pt``. Directories are written whole
(:func:`evorec.io.write_atomic_dir`); ``current``-style links are re-pointed atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evorec.errors import EvorecError, ModelDirError
from evorec.io import write_atomic_dir
from evorec.version import __version__

MODEL_FORMAT = 1
MANIFEST = "evorec-model.json"
CONFIG = "config.yaml"
STATE = "state.pt"
DATASET = "dataset"
RUN_CONFIG = "run.yaml"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.pt"
REQUIRED = (MANIFEST, CONFIG, STATE, DATASET)

# the manifest fields read back, with the JSON kind each must have when present
MANIFEST_TYPES: dict[str, tuple[type, str]] = {
    "model": (str, "a string"),
    "evorec_version": (str, "a string"),
    "fit_info": (dict, "an object"),
    "run_config": (dict, "an object"),
    "cutoff": (dict, "an object"),
    "lineage": (list, "an array"),
    "shards": (dict, "an object"),
    "compression": (dict, "an object"),
    "retrieval": (dict, "an object"),
}


def write_model_dir(
    path: str | Path,
    manifest: dict[str, Any],
    write: Callable[[Path], None],
    files: dict[str, str] | None = None,
    keep: Iterable[str] = (),
) -> Path:
    """Write a model directory at ``path`` in one step: ``write(tmp)`` adds the model's own
    files, the manifest (format and evorec version first) and ``files`` (name -> text) go
    beside; ``keep`` names files of an existing ``path`` that the new directory takes over."""
    record = {"format": MODEL_FORMAT, "evorec_version": __version__, **manifest}

    def fill(tmp: Path) -> None:
        write(tmp)
        (tmp / MANIFEST).write_text(json.dumps(record, indent=2, default=str))
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)

    return write_atomic_dir(path, fill, keep=keep)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a model directory, after checking the directory is complete and
    the manifest's fields have their types."""
    if not path.is_dir():
        raise ModelDirError(f"{path}: model directory not found")
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise ModelDirError(f"{path}: not a complete model directory, missing {', '.join(missing)}")
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_bytes())
    except OSError as exc:
        raise ModelDirError(f"{file}: cannot read the manifest ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{file}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelDirError(f"{file}: the manifest is a JSON {_json_kind(manifest)}, not an object")
    if manifest.get("format") != MODEL_FORMAT:
        raise ModelDirError(
            f"{path}: written by evorec {manifest.get('evorec_version', '?')} in model format "
            f"{manifest.get('format')}; this evorec {__version__} reads format {MODEL_FORMAT}"
        )
    if "model" not in manifest:
        raise ModelDirError(f"{file}: the manifest names no model (key 'model')")
    for key, (kind, name) in MANIFEST_TYPES.items():
        if key in manifest and not isinstance(manifest[key], kind):
            raise ModelDirError(
                f"{file}: '{key}' is a JSON {_json_kind(manifest[key])}, expected {name}"
            )
    return manifest


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def model_version(model_dir: Path) -> str:
    """``<directory name>-<digest of its manifest>``: a retrained model gets a new version."""
    digest = hashlib.sha256((model_dir / MANIFEST).read_bytes()).hexdigest()[:10]
    return f"{model_dir.resolve().name}-{digest}"


@dataclass(frozen=True)
class Cutoff:
    """The newest event a model was trained on: its time and, from a store, its event id."""

    timestamp: int
    event_id: int | None = None
    store: str | None = None  # the store's URL, for messages
    store_id: str | None = None  # the store's identity, which the event id belongs to

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "event_id": self.event_id,
            "store": self.store,
            "store_id": self.store_id,
        }


def recorded_cutoff(manifest: dict[str, Any]) -> Cutoff | None:
    """The manifest's ``cutoff`` entry, or None for a model saved without one."""
    recorded = manifest.get("cutoff")
    if not recorded:
        return None
    return Cutoff(
        int(recorded["timestamp"]),
        recorded.get("event_id"),
        recorded.get("store"),
        recorded.get("store_id"),
    )


def recorded_compression(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's ``compression`` entry (``method`` and its settings), or None for a
    model saved uncompressed."""
    return manifest.get("compression")


def recorded_retrieval(directory: Path) -> dict[str, Any] | None:
    """The retrieval settings a model directory's manifest records (``evorec compress
    --method sq8|pq``), or None: the service searches its item vectors with them."""
    file = directory / MANIFEST
    if not file.is_file():
        return None
    try:
        recorded = json.loads(file.read_bytes()).get("retrieval")
    except (OSError, ValueError, AttributeError):
        return None  # read_manifest names what is wrong when the model loads
    return recorded if isinstance(recorded, dict) else None


def lineage(manifest: dict[str, Any], parent: str) -> list[str]:
    """The versions a model derived from the one of ``manifest`` descends from, oldest first."""
    return [*manifest.get("lineage", []), parent]


SHARD_RULE = "sha256-mod"  # first 8 bytes of sha256(user id text), big-endian, mod n


@dataclass(frozen=True)
class Shards:
    """How the training users of a sharded model are split: user ``u`` belongs to shard
    ``sha256(str(u))[:8] mod n``, a rule of the id alone (users added later get theirs)."""

    n: int
    rule: str = SHARD_RULE

    def of(self, user_ids: Iterable[Any]) -> np.ndarray:
        """The shard of each user id (its text)."""
        return np.fromiter(
            (
                int.from_bytes(hashlib.sha256(str(user).encode()).digest()[:8], "big") % self.n
                for user in user_ids
            ),
            dtype=np.int64,
        )

    def record(self, user_ids: Iterable[Any]) -> dict[str, Any]:
        """The manifest's ``shards`` entry: the rule and each shard's user count."""
        counts = np.bincount(self.of(user_ids), minlength=self.n)
        return {"n": self.n, "rule": self.rule, "users": counts.tolist()}


def recorded_shards(manifest: dict[str, Any], where: Path) -> Shards | None:
    """The manifest's ``shards`` entry (``where``: the manifest, for messages), or None for
    a model trained without shards."""
    recorded = manifest.get("shards")
    if recorded is None:
        return None
    n, rule = recorded.get("n"), recorded.get("rule")
    if rule != SHARD_RULE or not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ModelDirError(
            f"{where}: 'shards' names rule {rule!r} with n {n!r}; this evorec {__version__} "
            f"knows rule {SHARD_RULE!r} with n >= 1"
        )
    return Shards(n, rule)


def point(link: str | Path, target: str | Path) -> None:
    """Make ``link`` a symbolic link to ``target``, atomically (a new link renamed over)."""
    link, target = Path(link), Path(target)
    if link.exists() and not link.is_symlink():
        raise EvorecError(f"{link}: exists and is not a link; give a new path for --link")
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target.resolve(), link.parent.resolve())
    tmp = Path(tempfile.mktemp(prefix=f".{link.name}.", dir=link.parent))
    os.symlink(relative, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
