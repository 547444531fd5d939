"""Pretraining on source datasets and fine-tuning on a target catalogue.

A sequence model splits into catalogue parameters (the id embedding table, attribute and
numeric encoders: one row or column per item or attribute of one catalogue) and transferable
ones: the trunk (position embeddings, attention or recurrent layers, norms) and, with
``item_features=["text"]``, the text projection that turns any item's text embedding into
its vector. Fine-tuning builds the target model with the pretrained settings, copies every
transferable parameter, initialises the catalogue parameters afresh for the target and
trains on the target with early stopping; ``freeze`` keeps the trunk or the transferred item
encoder fixed.

``pretrain`` trains on one or more source datasets: several sources are joined into one
dataset whose user and item ids are prefixed with the source's position (``0:``, ``1:``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import ValidationError

from evorec.config import RunConfig
from evorec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from evorec.data.schema import ITEM, USER
from evorec.data.split import EvalSet, make_split
from evorec.errors import ConfigError, EvorecError, first_validation_error
from evorec.evaluation.evaluator import evaluate
from evorec.features.items import text_column
from evorec.models.base import Recommender, read_manifest
from evorec.models.sequential import SequenceNetwork, SequentialRecommender
from evorec.training.pipeline import (
    TrainResult,
    build_model,
    load_data,
    refit_entry,
    refit_settings,
    save_trained,
)
from evorec.training.pipeline import train as run_train

Freeze = Literal["none", "trunk", "items"]
FREEZE_CHOICES: tuple[str, ...] = ("none", "trunk", "items")
# parameters with one row per item or attribute of a catalogue: never transferred
CATALOGUE_PARAMS = ("item_embedding.", "item_encoder.attributes.", "item_encoder.numeric.")
ITEM_SIDE = ("item_embedding.", "item_encoder.")
MATCH = "dim, layers, heads, max_len, item_features and fusion must be the pretrained ones"


class TransferError(EvorecError):
    """A pretrained model that cannot be fine-tuned as asked."""


def combine(datasets: list[Dataset]) -> Dataset:
    """One dataset of several sources: user and item ids prefixed ``k:`` (source ``k``),
    events and item tables stacked, behaviour codes mapped onto the union of names; each
    source's item text (``text``, else ``title``) lands in one ``text`` column."""
    if len(datasets) == 1:
        return datasets[0]
    behaviors = list(dict.fromkeys(b for d in datasets for b in d.behaviors))
    events, items, user_ids, item_ids = [], [], [], []
    n_users = n_items = 0
    for k, data in enumerate(datasets):
        codes = {code: behaviors.index(name) for code, name in enumerate(data.behaviors)}
        events.append(
            data.events.with_columns(
                pl.col(USER_IDX) + n_users,
                pl.col(ITEM_IDX) + n_items,
                pl.col("behavior").replace_strict(codes, default=None, return_dtype=pl.Int64),
            )
        )
        user_ids.append(f"{k}:" + data.user_ids.cast(pl.Utf8))
        item_ids.append(f"{k}:" + data.item_ids.cast(pl.Utf8))
        if data.items is not None:
            prefixed = pl.concat_str(pl.lit(f"{k}:"), pl.col(ITEM).cast(pl.Utf8))
            table = data.items.with_columns(prefixed.alias(ITEM), pl.col(ITEM_IDX) + n_items)
            text = text_column(table.columns)
            if text is not None and text != "text":
                table = table.with_columns(pl.col(text).alias("text"))
            items.append(table)
        n_users += data.n_users
        n_items += data.n_items
    return Dataset(
        events=pl.concat(events),
        user_ids=pl.concat(user_ids).alias(USER),
        item_ids=pl.concat(item_ids).alias(ITEM),
        items=pl.concat(items, how="diagonal_relaxed") if items else None,
        behaviors=behaviors,
        has_time=all(d.has_time for d in datasets),
        name="+".join(d.name for d in datasets),
        meta={"sources": [d.name for d in datasets]},
    )


def pretrain(
    config: RunConfig,
    sources: list[str],
    out: str | Path,
    *,
    progress: bool = False,
    refit: bool = False,
) -> TrainResult:
    """Train ``config``'s sequence model on the joined ``sources`` (paths read with
    ``config.data``'s format and preprocessing), evaluate on their held-out events, save
    (with ``refit``, the model refit on every event, as :func:`~.pipeline.train` does)."""
    if not sources:
        raise ConfigError("pretraining needs at least one source dataset (--data)")
    model = build_model(config)
    if not isinstance(model, SequentialRecommender):
        raise TransferError(f"pretraining needs a sequence model, not {model.name}")
    datasets = [load_data(config.data.model_copy(update={"path": s})) for s in sources]
    config = config.model_copy(deep=True)
    config.data.path = sources[0]
    return run_train(config, out, dataset=combine(datasets), progress=progress, refit=refit)


def load_pretrained(path: str | Path) -> SequentialRecommender:
    """The pretrained sequence model in ``path``; one-line errors otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise TransferError(f"{path}: pretrained model directory not found (--from)")
    read_manifest(path)
    model = Recommender.load(path)
    if not isinstance(model, SequentialRecommender):
        raise TransferError(
            f"{path}: holds a {model.name} model; only sequence models can be fine-tuned"
        )
    return model


def target_model(source: SequentialRecommender, overrides: dict[str, Any]) -> SequentialRecommender:
    """A new model of the source's class with its settings and the given overrides."""
    name = overrides.pop("name", source.name)
    if name != source.name:
        raise TransferError(
            f"cannot fine-tune a pretrained {source.name} model as {name}: fine-tuning "
            "keeps the pretrained model's class"
        )
    values = {**source.config.model_dump(), **overrides}
    try:
        return type(source)(type(source).config_class(**values))
    except ValidationError as exc:
        raise ConfigError(f"invalid {name} setting {first_validation_error(exc)}") from None


def transfer_parameters(source: SequenceNetwork, target: SequenceNetwork) -> list[str]:
    """Copy every transferable parameter of ``source`` into ``target``; the names copied.

    Catalogue parameters stay as initialised; a transferable parameter missing from the
    target, or of another shape, makes the models incompatible."""
    state = target.state_dict()
    copied = []
    for key, value in source.state_dict().items():
        if key.startswith(CATALOGUE_PARAMS):
            continue
        if key not in state:
            raise TransferError(
                f"incompatible model: the pretrained parameter {key} has no counterpart "
                f"in the target ({MATCH})"
            )
        if state[key].shape != value.shape:
            raise TransferError(
                f"incompatible model: parameter {key} is {tuple(value.shape)} pretrained "
                f"but {tuple(state[key].shape)} in the target ({MATCH})"
            )
        state[key] = value
        copied.append(key)
    missing = [k for k in state if not k.startswith(CATALOGUE_PARAMS) and k not in copied]
    if missing:
        raise TransferError(
            f"incompatible model: the target parameter {missing[0]} was not pretrained ({MATCH})"
        )
    target.load_state_dict(state)
    return copied


def freeze_choice(value: str) -> Freeze:
    """``value`` checked against the freeze choices."""
    if value not in FREEZE_CHOICES:
        raise ConfigError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, not {value!r}")
    return value  # type: ignore[return-value]


def freeze_parameters(
    network: SequenceNetwork, freeze: Freeze, transferred: list[str]
) -> list[str]:
    """Stop gradients of the transferred trunk (``trunk``) or the transferred item encoder
    (``items``); returns the frozen parameter names."""
    if freeze_choice(freeze) == "none":
        return []
    item_side = freeze == "items"
    frozen = [k for k in transferred if k.startswith(ITEM_SIDE) == item_side]
    if not frozen:
        raise TransferError(
            f"--freeze {freeze}: the pretrained model has no transferred "
            f"{'item encoder (id-only items)' if item_side else 'trunk'} parameters to freeze"
        )
    parameters = dict(network.named_parameters())
    for key in frozen:
        parameters[key].requires_grad_(False)
    return frozen


def finetune(
    from_dir: str | Path,
    config: RunConfig,
    out: str | Path | None = None,
    *,
    freeze: Freeze = "none",
    dataset: Dataset | None = None,
    progress: bool = False,
    refit: bool = False,
) -> TrainResult:
    """Fine-tune the pretrained model in ``from_dir`` on ``config``'s target data (or
    ``dataset``): transfer, optional freezing, training with early stopping on the target's
    validation split, test evaluation and, with ``out``, an atomic save that records where
    the model was transferred from. With ``refit``, the transfer and fine-tuning are then
    repeated on every target event for the epochs validation chose, and that model is saved
    (the test metrics stay those of the first)."""
    source = load_pretrained(from_dir)
    dataset = dataset if dataset is not None else load_data(config.data)
    split = make_split(dataset, config.data.split)
    began = time.perf_counter()
    model, transferred, frozen = _fine_tuned(
        source, dict(config.model), split.train, split.valid, freeze, progress
    )
    model.dataset = split.full
    train_seconds = time.perf_counter() - began
    began = time.perf_counter()
    result = evaluate(
        model,
        split.test,
        ks=tuple(config.evaluation.ks),
        filter_seen=config.evaluation.filter_seen,
        users=config.evaluation.users,
    )
    eval_seconds = time.perf_counter() - began
    extra: dict[str, Any] = {}
    selection = model
    if refit:
        chosen = refit_settings(model)
        began = time.perf_counter()
        model, _, _ = _fine_tuned(
            source, {**config.model, **chosen}, split.full, None, freeze, progress
        )
        model.dataset = split.full
        refit_seconds = time.perf_counter() - began
        extra["refit"] = refit_entry(model, selection, split, chosen, refit_seconds)
        train_seconds += refit_seconds
    if out is not None:
        source_info = {
            "from": str(Path(from_dir).resolve()),
            "source_data": source.fitted_dataset().name,
            "freeze": freeze,
            "transferred": transferred,
            "frozen": frozen,
        }
        extra["transfer"] = source_info
        save_trained(model, config, split, result, out, extra=extra, configured=selection)
    return TrainResult(model, split, result, train_seconds, eval_seconds)


def _fine_tuned(
    source: SequentialRecommender,
    overrides: dict[str, Any],
    train: Dataset,
    valid: EvalSet | None,
    freeze: Freeze,
    progress: bool,
) -> tuple[SequentialRecommender, list[str], list[str]]:
    """A target model started from ``source`` and trained on ``train`` (early stopping on
    ``valid`` when given); with the transferred and the frozen parameter names."""
    from evorec.training.trainer import SequenceTrainer

    model = target_model(source, overrides)
    model.seed_rngs()
    model.prepare(train, progress)
    transferred = transfer_parameters(source.fitted_network(), model.network)
    frozen = freeze_parameters(model.network, freeze, transferred)
    model.fit_info = SequenceTrainer(model, train, valid, progress=progress).run()
    return model, transferred, frozen
