"""Incremental training: a sequence model warm-started on the events stored since its cut-off.

The cut-off (``cutoff`` in the manifest) is the newest event time the model has seen and,
once a model has been updated from an event store, the store's event id cursor: the next
update reads only events after it. Training from files records the dataset's newest time;
older manifests fall back to it.

An update extends the id mappings with new users and items, grows the item table (new rows
start at the mean item row plus a little noise; old rows are kept), holds out each updated
user's last event, fine-tunes for a few epochs on the updated users' whole histories plus a
replay sample of other users (against forgetting), and evaluates the old and the updated
model on the same hold-out before the new version is written.

The event id cursor belongs to one store: the manifest records the store's ``store_id`` and
an update from another store is refused (``force``: read the events newer than the cut-off
time instead). Users erased from the store (its erasure log) leave the new version: their
events and id mapping rows are dropped from the parent's dataset, and the events they posted
after their erasure come back as a new user's.

In a distributed run (``evorec update --nproc N``, torchrun) every rank reads the same
events and takes the same replay sample and hold-out (the same seed); the fine-tuning is
data-parallel, rank 0's hold-out metrics decide ``reject_worse`` on every rank, and rank 0
alone writes the new version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evorec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from evorec.data.histories import Histories
from evorec.data.schema import BEHAVIOR, ITEM, LINE, TIME, USER, VALUE
from evorec.data.social import FRIENDS
from evorec.data.split import EvalSet
from evorec.errors import ConfigError, EvorecError, ModelDirError, first_validation_error
from evorec.evaluation.evaluator import evaluate
from evorec.modeldir import (
    METRICS,
    RUN_CONFIG,
    Cutoff,
    lineage,
    model_version,
    recorded_cutoff,
)
from evorec.models.base import Recommender, read_manifest
from evorec.models.compression import Int8Embedding
from evorec.models.sequential import SequenceNetwork, SequentialRecommender
from evorec.training.distributed import broadcast_object, context, is_main

if TYPE_CHECKING:
    from evorec.store import EventStore

KS = (10,)
RANK_METRICS = ("HR", "NDCG", "MRR")


class UpdateConfig(BaseModel):
    """Settings of one incremental update."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="fine-tuning epochs")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the model's)")
    replay: float = Field(1.0, ge=0, description="other users replayed per updated user")
    noise: float = Field(0.1, ge=0, description="spread of new item rows, x the rows' std")
    seed: int = 0


@dataclass
class UpdateResult:
    model: SequentialRecommender
    parent_version: str
    cutoff: Cutoff
    counts: dict[str, int]
    old: dict[str, float]
    new: dict[str, float]
    fit_info: dict[str, Any]


def dataset_cutoff(dataset: Dataset) -> Cutoff:
    """The cut-off of a model trained on ``dataset`` from files: its newest event time."""
    times = dataset.events[TIME]
    return Cutoff(int(times.max()) if times.len() else 0)


def read_cutoff(manifest: dict[str, Any], dataset: Dataset) -> Cutoff:
    """The manifest's cut-off; for a model saved without one, its dataset's newest event."""
    return recorded_cutoff(manifest) or dataset_cutoff(dataset)


def update_config(values: dict[str, Any]) -> UpdateConfig:
    try:
        return UpdateConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"invalid update setting {first_validation_error(exc)}") from None


def update(
    model_dir: str | Path,
    store: EventStore,
    out: str | Path,
    config: UpdateConfig | None = None,
    *,
    progress: bool = False,
    reject_worse: bool = False,
    force: bool = False,
    refit: bool = True,
) -> UpdateResult:
    """Update the model in ``model_dir`` with the events of ``store`` after its cut-off and
    save it to ``out`` (atomically; in a distributed run rank 0 writes), with the parent
    version and the new cut-off; the store's erased users are left out. ``force``: accept a
    store other than the cut-off's, reading its events newer than the cut-off time.

    The update is first fine-tuned without each updated user's last event and measured on
    those events; with ``refit`` (the default) the saved model is then fine-tuned the same
    way from the old one on every new event, the hold-out included."""
    config = config or UpdateConfig()
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    model = Recommender.load(model_dir)
    if not isinstance(model, SequentialRecommender):
        raise EvorecError(
            f"{model_dir}: incremental update needs a sequence model, not {model.name}; "
            "retrain it with evorec train"
        )
    if model.user_profiles is not None:
        raise EvorecError(
            f"{model_dir}: incremental update does not extend user profiles; retrain it "
            "with evorec train"
        )
    cutoff = check_store(read_cutoff(manifest, model.fitted_dataset()), store, force)
    known = model.fitted_dataset().user_ids.cast(pl.Utf8).to_list()
    old_data, erased = drop_erased(model.fitted_dataset(), store.erased_among(known))
    fresh = new_events(store, cutoff)
    if fresh.height == 0:
        where = (
            f"event id {cutoff.event_id}"
            if cutoff.event_id is not None
            else f"time {cutoff.timestamp}"
        )
        raise EvorecError(f"{store.display_url}: no events after the model's cut-off ({where})")
    if erased:
        fresh = with_returning(fresh, store, erased)
    data, is_new = extend_dataset(old_data, fresh)
    holdout, train_mask = hold_out_last(data, is_new)
    updated_users = np.unique(data.events[USER_IDX].to_numpy()[is_new])
    replay = replay_users(data, updated_users, config)
    users = np.concatenate([updated_users, replay])
    events = data.events.with_row_index("_row").filter(
        pl.Series(train_mask) & pl.col(USER_IDX).is_in(users)
    )
    train = data.with_events(events.drop("_row"))

    old_scores = evaluate_known(model, holdout, old_data.n_items)
    grow(model, data.n_items, config, with_events=train.item_popularity > 0)
    fit_info = fine_tune(model, train, config, progress)
    model.dataset = data
    new_scores = _rank_metrics(evaluate(model, holdout, ks=KS).metrics)
    if context().active:  # one decision and one record for all ranks: rank 0's
        old_scores, new_scores = broadcast_object((old_scores, new_scores))
    if reject_worse and new_scores["NDCG@10"] < old_scores["NDCG@10"]:
        raise EvorecError(
            f"updated model NDCG@10 {new_scores['NDCG@10']:.4f} < old "
            f"{old_scores['NDCG@10']:.4f} on the hold-out; nothing written"
        )
    if refit:
        model = Recommender.load(model_dir)
        assert isinstance(model, SequentialRecommender)
        everything = data.with_events(data.events.filter(pl.col(USER_IDX).is_in(users)))
        grow(model, data.n_items, config, with_events=everything.item_popularity > 0)
        refit_info = fine_tune(model, everything, config, progress)
        model.dataset = data
        fit_info = {**fit_info, "refit": {"events": everything.n_events, **refit_info}}
    new_cutoff = Cutoff(
        max(cutoff.timestamp, int(fresh[TIME].max())),
        int(fresh[LINE].max()),
        store.display_url,
        store.store_id,
    )
    counts = {
        "new_events": fresh.height,
        "erased_users": len(erased),
        "new_users": data.n_users - old_data.n_users,
        "new_items": data.n_items - old_data.n_items,
        "updated_users": len(updated_users),
        "replay_users": len(replay),
        "holdout_users": len(holdout),
    }
    parent = model_version(model_dir)
    model.fit_info = fit_info
    report = {"users": len(holdout), "target": "each updated user's last event"}
    extra = {
        "cutoff": new_cutoff.to_dict(),
        "parent": {"version": parent, "model_dir": str(model_dir.resolve())},
        "lineage": lineage(manifest, parent),
        "update": {
            **counts,
            "config": config.model_dump(),
            "holdout": {**report, "old": old_scores, "new": new_scores},
            "refit": refit,
            "train_seconds": fit_info["train_seconds"]
            + fit_info.get("refit", {}).get("train_seconds", 0.0),
        },
    }
    files = {METRICS: json.dumps({"holdout": extra["update"]["holdout"]}, indent=2)}
    if "run_config" in manifest:
        extra["run_config"] = manifest["run_config"]
        if (model_dir / RUN_CONFIG).is_file():
            files[RUN_CONFIG] = (model_dir / RUN_CONFIG).read_text()
    if is_main():
        model.save(out, extra=extra, files=files)
    return UpdateResult(model, parent, new_cutoff, counts, old_scores, new_scores, fit_info)


def check_store(cutoff: Cutoff, store: EventStore, force: bool) -> Cutoff:
    """The cut-off to read ``store`` from: as recorded when its event id cursor belongs to
    ``store``; with ``force``, another store is read from the cut-off time."""
    if cutoff.store_id is None or cutoff.store_id == store.store_id:
        return cutoff
    if force:
        return Cutoff(cutoff.timestamp)
    raise EvorecError(
        f"--db {store.display_url}: store {store.store_id} is not the model's cut-off store "
        f"{cutoff.store_id} ({cutoff.store}, event id {cutoff.event_id}); give that store, "
        f"or --force to read the events after time {cutoff.timestamp} from this one"
    )


def drop_erased(dataset: Dataset, erased: Iterable[str]) -> tuple[Dataset, list[str]]:
    """``dataset`` without the users of ``erased`` (text ids): their events and id mapping
    rows (the other users renumbered, in order), their rows of the user table and their ids
    in other users' ``friends`` lists. Returns it and the erased ids it held."""
    text_ids = dataset.user_ids.cast(pl.Utf8)
    gone = text_ids.is_in(pl.Series(list(erased), dtype=pl.Utf8).implode()).to_numpy()
    if not gone.any():
        return dataset, []
    renumber = np.cumsum(~gone) - 1
    events = dataset.events.filter(~pl.Series(gone).gather(dataset.events[USER_IDX]))
    events = events.with_columns(
        pl.Series(USER_IDX, renumber[events[USER_IDX].to_numpy()], dtype=pl.Int64)
    )
    users = dataset.users
    gone_ids = text_ids.filter(gone).implode()
    if users is not None and USER in users.columns:
        users = users.filter(~pl.col(USER).cast(pl.Utf8).is_in(gone_ids))
    if users is not None and USER_IDX in users.columns:
        users = users.with_columns(
            pl.Series(USER_IDX, renumber[users[USER_IDX].to_numpy()], dtype=pl.Int64)
        )
    if users is not None and FRIENDS in users.columns:
        kept_friend = ~pl.element().cast(pl.Utf8).is_in(gone_ids)
        users = users.with_columns(pl.col(FRIENDS).list.eval(pl.element().filter(kept_friend)))
    kept = dataset.replace(
        events=events, user_ids=dataset.user_ids.filter(~pl.Series(gone)), users=users
    )
    return kept, text_ids.filter(gone).to_list()


def with_returning(fresh: pl.DataFrame, store: EventStore, erased: list[str]) -> pl.DataFrame:
    """``fresh`` plus the stored events of erased users before the cursor: all posted after
    their erasure, they come back as a new user's (in arrival order)."""
    returning = store.histories(erased).filter(~pl.col(LINE).is_in(fresh[LINE].implode()))
    return pl.concat([fresh, returning]).sort(LINE)


def new_events(store: EventStore, cutoff: Cutoff) -> pl.DataFrame:
    """The store's events after the cut-off: after its event id when the model has one,
    else newer than its time."""
    if cutoff.event_id is not None:
        return store.events(since=cutoff.event_id)
    return store.events().filter(pl.col(TIME) > cutoff.timestamp)


def extend_dataset(dataset: Dataset, events: pl.DataFrame) -> tuple[Dataset, np.ndarray]:
    """``dataset`` with the store ``events`` (text ids) added: new users and items get the
    next indices, old indices stay. Returns it and, per event, whether it is one of the
    added (events sorted by user then time, added events after old ones of equal time)."""
    user_ids, users = _extend_ids(dataset.user_ids, events[USER])
    item_ids, items = _extend_ids(dataset.item_ids, events[ITEM])
    codes = {name: code for code, name in enumerate(dataset.behaviors)}
    behaviors = pl.Series(
        "behavior", [codes.get(b) for b in events[BEHAVIOR].to_list()], dtype=pl.Int64
    )
    added = pl.DataFrame(
        {
            USER_IDX: users,
            ITEM_IDX: items,
            "timestamp": events[TIME],
            "behavior": behaviors,
            "value": events[VALUE],
            "_new": pl.Series([True] * events.height, dtype=pl.Boolean),
        }
    )
    old = dataset.events.with_columns(_new=pl.lit(False))
    merged = pl.concat([old, added.cast(old.schema)]).sort(
        [USER_IDX, "timestamp"], maintain_order=True
    )
    extended = dataset.replace(events=merged.drop("_new"), user_ids=user_ids, item_ids=item_ids)
    return extended, merged["_new"].to_numpy()


def _extend_ids(mapping: pl.Series, ids: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The id mapping with the unseen ``ids`` (text) appended, and the index of each id.
    Ids that do not fit the mapping's type turn the whole mapping into text."""
    typed = ids.cast(mapping.dtype, strict=False)
    if typed.null_count() > ids.null_count():
        mapping, typed = mapping.cast(pl.Utf8), ids
    distinct = pl.DataFrame({"id": typed.unique(maintain_order=True)})
    known = pl.DataFrame({"id": mapping})
    unseen = distinct.join(known, on="id", how="anti", maintain_order="left")["id"]
    mapping = pl.concat([mapping, unseen.rename(mapping.name)])
    index = pl.DataFrame({"id": mapping, "idx": np.arange(len(mapping), dtype=np.int64)})
    found = pl.DataFrame({"id": typed}).join(index, on="id", how="left", maintain_order="left")
    return mapping, found["idx"].to_numpy().astype(np.int64)


def hold_out_last(data: Dataset, is_new: np.ndarray) -> tuple[EvalSet, np.ndarray]:
    """The hold-out (each updated user's last event when it is new and follows another
    event) and the mask of events left for training."""
    hist = data.histories
    lengths = hist.lengths
    last = hist.offsets[1:] - 1
    users = np.flatnonzero((lengths >= 2) & is_new[np.maximum(last, 0)])
    if len(users) == 0:
        raise EvorecError("no updated user has an earlier event to evaluate the update on")
    train_mask = np.ones(len(is_new), dtype=bool)
    train_mask[last[users]] = False
    rows = hist.take(users)
    holdout = EvalSet(
        users,
        rows.slice_each(0, -1),
        rows.slice_each(-1, rows.lengths),
        not data.has_repeats,
    )
    return holdout, train_mask


def replay_users(data: Dataset, updated: np.ndarray, config: UpdateConfig) -> np.ndarray:
    """A random sample of users without new events (``replay`` per updated user)."""
    others = np.setdiff1d(np.flatnonzero(data.histories.lengths >= 2), updated)
    size = min(len(others), round(config.replay * len(updated)))
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(others, size, replace=False)) if size else others[:0]


def evaluate_known(model: Recommender, holdout: EvalSet, n_items: int) -> dict[str, float]:
    """Metrics of a model that knows only the first ``n_items`` items: histories keep the
    items it knows, a target it does not know is a miss."""
    known = holdout.targets.items < n_items
    if not known.any():
        return {f"{name}@{k}": 0.0 for name in RANK_METRICS for k in KS}
    rows = np.flatnonzero(known)
    subset = EvalSet(
        holdout.users[rows],
        _only_items_below(holdout.histories.take(rows), n_items),
        holdout.targets.take(rows),
        holdout.filter_seen,
    )
    metrics = _rank_metrics(evaluate(model, subset, ks=KS).metrics)
    return {name: value * len(rows) / len(holdout) for name, value in metrics.items()}


def _only_items_below(hist: Histories, n_items: int) -> Histories:
    keep = hist.items < n_items
    rows = np.repeat(np.arange(len(hist)), hist.lengths)
    offsets = np.zeros(len(hist) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=len(hist)), out=offsets[1:])
    return Histories(
        offsets,
        hist.items[keep],
        None if hist.timestamps is None else hist.timestamps[keep],
        None if hist.behaviors is None else hist.behaviors[keep],
    )


def _rank_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if name.split("@")[0] in RANK_METRICS}


def grow(
    model: SequentialRecommender,
    n_items: int,
    config: UpdateConfig,
    with_events: np.ndarray | None = None,
) -> None:
    """Give the network an item table of ``n_items`` items: old rows kept, each new row
    the mean item row plus Gaussian noise (``noise`` x the rows' std). Other per-item rows
    after the items (BERT4Rec's ``[MASK]``) move to the end. Content features grow with
    empty content for the new items (they come with events, not content: their id rows
    carry them); the content encoders keep their parameters. ``with_events`` marks the
    items the coming training has events of: they join the trained items (default: the
    new items). An int8 item table (a compressed model's) becomes float32 parameters, to be
    trained."""
    old_net = model.fitted_network()
    if isinstance(old_net.item_embedding, Int8Embedding):
        old_net.item_embedding = old_net.item_embedding.dequantised()
    n_old = model.n_items
    added = n_items - n_old
    features = model.features
    if added == 0 and features is None:
        return
    if features is not None:
        trained = np.concatenate([features.trained, np.ones(added, bool)])
        if with_events is not None:
            trained[n_old:] = False
            trained |= with_events
        model.features = features.extended(trained)
    generator = torch.Generator().manual_seed(config.seed)
    network: SequenceNetwork = model.new_network(n_items)
    state = network.state_dict()
    for key, value in old_net.state_dict().items():
        target = state[key]
        if value.shape == target.shape:
            state[key] = value
        elif value.shape[1:] == target.shape[1:] and target.shape[0] - value.shape[0] == added:
            rows = value[1 : n_old + 1].float()
            noise = torch.randn((added, *rows.shape[1:]), generator=generator)
            start = rows.mean(0) + noise * rows.std(0) * config.noise
            state[key] = torch.cat([value[: n_old + 1], start.to(value), value[n_old + 1 :]])
        else:
            raise ModelDirError(
                f"{model.name}: cannot grow parameter {key} from {tuple(value.shape)} "
                f"to {tuple(target.shape)}"
            )
    network.load_state_dict(state)
    model.network = network


def fine_tune(
    model: SequentialRecommender, train: Dataset, config: UpdateConfig, progress: bool
) -> dict[str, Any]:
    """A few epochs of the model's own training objective on ``train``, warm-started."""
    from evorec.training.trainer import SequenceTrainer

    saved = model.config
    model.config = saved.model_copy(
        update={"epochs": config.epochs, "lr": config.lr or saved.lr, "seed": config.seed}
    )
    model.dataset = train
    try:
        torch.manual_seed(config.seed)
        return SequenceTrainer(model, train, None, progress=progress).run()
    finally:
        model.config = saved
