"""Forgetting users: a new model version that never learned from them.

A sharded model (:class:`~evorec.models.ensemble.Sharded`, SISA) retrains only the
members whose shards held the users, from their seeds, on the shards' remaining events:
the result is the model that training without those users would have given, the other
members left bit for bit as they were. Any other model is retrained whole (one shard).
Members train as a refit does: the epochs in ``config.yaml`` (a refit's chosen ones), or,
for a model trained with validation and no refit, the epoch validation chose for it.

The new version is written atomically beside the old one with its parent and lineage; the
cut-off stays the parent's (no new events are read). A link given as the model directory
is re-pointed at it; then the old versions along the lineage that still hold any of the
users (their ``dataset/`` and weights) are removed, unless told to keep them. The manifest
records how many users and events left, never their ids.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from evorec.data.dataset import Dataset
from evorec.errors import EvorecError, ModelDirError
from evorec.modeldir import (
    DATASET,
    MANIFEST,
    RUN_CONFIG,
    lineage,
    model_version,
    point,
    read_manifest,
)
from evorec.models.base import Recommender, get_model_class
from evorec.models.ensemble import Sharded
from evorec.training.incremental import drop_erased

if TYPE_CHECKING:
    from evorec.store import EventStore

# the manifest entries a forgotten version keeps from its parent (the test metrics go:
# they were measured on a model that had learned from the users)
KEPT_ENTRIES = ("run_config", "cutoff", "protocol", "refit")


class NothingToForget(EvorecError):
    """None of the users is in the model's dataset: the model never learned from them."""


@dataclass
class ForgetResult:
    model: Recommender
    out: Path
    users: int  # users found in the dataset and forgotten
    events: int  # their events, removed
    retrained: list[int]  # the shards retrained (a model without shards: [0])
    shards: int  # shards in all (1 for a model without shards)
    train_seconds: float
    removed: list[Path]  # old versions deleted (they held some of the users)


def forget(
    model_dir: str | Path,
    user_ids: Iterable[Any],
    out: str | Path | None = None,
    *,
    store: EventStore | None = None,
    keep_old: bool = False,
    progress: bool = False,
) -> ForgetResult:
    """Write a version of the model in ``model_dir`` that has forgotten ``user_ids``
    (original ids, compared as text) to ``out`` (default: a new directory beside the old
    one). With ``store``, the users are erased there too (events deleted, erasure logged)
    and every user of its erasure log that the model still holds is forgotten as well.
    :class:`NothingToForget` when the model holds none of them."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    model = Recommender.load(model_dir)
    dataset = model.fitted_dataset()
    wanted = {str(user) for user in user_ids}
    if store is not None:
        for user in sorted(wanted):
            store.delete_user(user)
        wanted |= set(store.erased_among(dataset.user_ids.cast(pl.Utf8).to_list()))
    kept, found = drop_erased(dataset, wanted)
    if not found:
        raise NothingToForget(
            f"{model_dir}: none of the {len(wanted)} users is in the model's dataset; "
            "nothing to forget"
        )
    began = time.perf_counter()
    if isinstance(model, Sharded):
        shards = model.config.shards
        retrained = sorted({int(k) for k in model.shards.of(found)})
        fields = model.member(0).config_class.model_fields
        settings = {k: member_settings(manifest, k, fields) for k in retrained}
        model = model.retrained(kept, retrained, progress, settings)
    else:
        shards, retrained = 1, [0]
        chosen = member_settings(manifest, None, model.config_class.model_fields)
        fresh = get_model_class(model.name)({**model.config.model_dump(), **chosen})
        model = fresh.fit(kept, progress=progress)
    seconds = time.perf_counter() - began
    parent = model_version(model_dir)
    source = model_dir.resolve()
    target = Path(out) if out is not None else next_version_dir(source)
    extra: dict[str, Any] = {key: manifest[key] for key in KEPT_ENTRIES if key in manifest}
    extra.update(
        parent={"version": parent, "model_dir": str(source)},
        lineage=lineage(manifest, parent),
        forget={
            "users": len(found),
            "events": dataset.n_events - kept.n_events,
            "retrained_shards": retrained,
            "shards": shards,
            "train_seconds": seconds,
        },
    )
    files = {}
    if (model_dir / RUN_CONFIG).is_file():
        files[RUN_CONFIG] = (model_dir / RUN_CONFIG).read_text()
    model.save(target, extra=extra, files=files)
    if model_dir.is_symlink():
        point(model_dir, target)
    removed = [] if keep_old else remove_versions_holding(source, found, keep=target.resolve())
    return ForgetResult(
        model, target, len(found), extra["forget"]["events"], retrained, shards, seconds, removed
    )


def member_settings(
    manifest: dict[str, Any], k: int | None, fields: Iterable[str]
) -> dict[str, Any]:
    """Settings that retrain member ``k`` (None: a model without members), whose config
    has ``fields``, as a refit: for a model fitted with validation and not refit, the epoch
    validation chose; for one trained without validation, the epochs it ran; else none
    (``config.yaml`` holds the epochs, a refit's chosen ones included)."""
    if "refit" in manifest or "epochs" not in fields:
        return {}
    info = manifest.get("fit_info", {})
    if k is not None:
        members = info.get("members", [])
        info = members[k] if k < len(members) else {}
    if info.get("best_valid") and "best_epoch" in info:
        return {"epochs": int(info["best_epoch"])}
    if "epochs" in info:
        return {"epochs": int(info["epochs"])}
    return {}


def next_version_dir(model_dir: Path) -> Path:
    """``<name>-forget-<n>`` beside ``model_dir``, ``n`` the first number not taken (a
    former ``-forget-<n>`` suffix of the name replaced)."""
    base = re.sub(r"-forget-\d+$", "", model_dir.name)
    n = 1
    while (model_dir.parent / f"{base}-forget-{n}").exists():
        n += 1
    return model_dir.parent / f"{base}-forget-{n}"


def remove_versions_holding(model_dir: Path, user_ids: list[str], keep: Path) -> list[Path]:
    """Delete ``model_dir`` and its ancestors (each manifest's ``parent``) whose datasets
    hold any of ``user_ids``; ``keep`` is never deleted. Returns the deleted directories."""
    removed: list[Path] = []
    seen: set[Path] = set()
    current: Path | None = model_dir
    while current is not None and current not in seen and (current / MANIFEST).is_file():
        seen.add(current)
        try:
            manifest = read_manifest(current)
            holds = _holds_any(current / DATASET, user_ids)
        except (ModelDirError, EvorecError, OSError):
            break  # not a model directory we can read: leave it and what it descends from
        parent = manifest.get("parent", {}).get("model_dir")
        if holds and current != keep:
            shutil.rmtree(current)
            removed.append(current)
        current = Path(parent) if parent else None
    return removed


def _holds_any(dataset_dir: Path, user_ids: list[str]) -> bool:
    ids = Dataset.load(dataset_dir).user_ids.cast(pl.Utf8)
    return bool(ids.is_in(pl.Series(user_ids, dtype=pl.Utf8).implode()).any())
