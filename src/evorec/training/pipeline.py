"""The train -> evaluate -> save pipeline shared by the CLI and the Python API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from evorec.config import DataConfig, EvaluationConfig, RunConfig
from evorec.data.dataset import Dataset
from evorec.data.load import load_dataset
from evorec.data.split import Split, make_split
from evorec.errors import ConfigError, ModelDirError, first_validation_error
from evorec.evaluation.evaluator import EvalResult, evaluate
from evorec.modeldir import CHECKPOINT
from evorec.models import get_model_class
from evorec.models.base import MANIFEST, Recommender, read_manifest
from evorec.training.distributed import is_main, main_first
from evorec.training.incremental import dataset_cutoff


@dataclass
class TrainResult:
    model: Recommender
    split: Split
    test: EvalResult
    train_seconds: float
    eval_seconds: float


def load_data(config: DataConfig) -> Dataset:
    if config.path is None:
        raise ConfigError("no data path: pass --data PATH or set data.path in the config")
    with main_first():  # in a distributed run rank 0 fills the processed-data cache
        return load_dataset(
            config.path,
            config.format,
            columns=config.columns,
            preprocess_config=config.preprocess,
            on_bad_rows=config.on_bad_rows,
            encoding=config.encoding,
        )


def build_model(config: RunConfig) -> Recommender:
    return get_model_class(config.model_name)(config.model_params)


def train(
    config: RunConfig,
    out: str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    progress: bool = False,
    resume: bool = False,
    refit: bool = False,
) -> TrainResult:
    """Load and split the data, fit the configured model (validation picks the epoch),
    evaluate it on the test split and, when ``out`` is given, save it there with its
    effective config and test metrics.

    With ``refit`` a second model with the same settings and the number of epochs that
    validation chose is then trained on every event, each user's latest ones (the validation
    and test targets) included, and that model is saved and returned: the test metrics stay
    those of the first model, measured on events it never saw."""
    dataset = dataset if dataset is not None else load_data(config.data)
    split = make_split(dataset, config.data.split)
    model = build_model(config)
    out = Path(out) if out is not None else None
    checkpoint = out / CHECKPOINT if out is not None else None
    began = time.perf_counter()
    model.fit(split, progress=progress, checkpoint=checkpoint, resume=resume)
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
        model = get_model_class(config.model_name)({**config.model_params, **chosen})
        began = time.perf_counter()
        model.fit(split.full, progress=progress)
        refit_seconds = time.perf_counter() - began
        extra["refit"] = refit_entry(model, selection, split, chosen, refit_seconds)
        train_seconds += refit_seconds
    if out is not None:
        save_trained(
            model,
            config,
            split,
            result,
            out,
            extra=extra,
            configured=selection,
            # the final save replaces ``out``: keep the checkpoint so that a finished run can
            # be continued with more epochs (``--resume``)
            keep=(CHECKPOINT,),
        )
    return TrainResult(model, split, result, train_seconds, eval_seconds)


def refit_entry(
    refit: Recommender,
    selection: Recommender,
    split: Split,
    chosen: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """The manifest's ``refit`` record; ``refit`` then carries the selection run's fit info
    (what chose its settings), its own goes into the record."""
    entry = {
        "events": split.full.n_events,
        "settings": chosen,
        "train_seconds": seconds,
        "fit_info": refit.fit_info,
        "note": "trained on every event after the selection run; the test metrics are the "
        "selection run's, on events it had not seen",
    }
    refit.fit_info = selection.fit_info
    return entry


def refit_settings(model: Recommender) -> dict[str, Any]:
    """The settings a refit on all events takes from a model fitted with validation: the
    epoch that validation chose (the median over an ensemble's members)."""
    info = model.fit_info
    fields = model.config_class.model_fields
    if "epochs" in fields and info.get("best_valid"):
        return {"epochs": int(info["best_epoch"])}
    if "settings" in fields and info.get("members"):
        chosen = [m["best_epoch"] for m in info["members"] if m.get("best_valid")]
        if chosen:
            settings = dict(model.config.model_dump()["settings"])
            return {"settings": {**settings, "epochs": int(np.median(chosen))}}
    return {}


def save_trained(
    model: Recommender,
    config: RunConfig,
    split: Split,
    result: EvalResult,
    out: str | Path,
    *,
    extra: dict[str, Any] | None = None,
    keep: tuple[str, ...] = (),
    configured: Recommender | None = None,
) -> None:
    """Save a trained model with its effective run config, protocol, test metrics and
    cut-off (plus ``extra`` in the manifest), so that ``evaluate_model_dir`` can rerun it.
    The run config holds the settings of ``configured`` (the selection run of a refit
    model, whose epochs the run chose from), by default the saved model's. In a
    distributed run only rank 0 writes."""
    if not is_main():
        return
    settings = (configured or model).config
    effective = config.model_copy(deep=True)
    effective.model = {"name": model.name, **settings.model_dump()}
    model.save(
        out,
        extra={
            "run_config": effective.model_dump(mode="json"),
            "protocol": split.protocol,
            "test": result.to_dict(),
            "cutoff": dataset_cutoff(split.full).to_dict(),
            **(extra or {}),
        },
        files={
            "run.yaml": yaml.safe_dump(effective.model_dump(mode="json"), sort_keys=False),
            "metrics.json": json.dumps(result.to_dict(), indent=2),
        },
        keep=keep,
    )


def evaluate_model_dir(
    path: str | Path, *, filter_seen: bool | None = None
) -> tuple[Recommender, Split, EvalResult]:
    """Re-run the saved model's test protocol on the data it was trained with."""
    path = Path(path)
    manifest = read_manifest(path)
    if "run_config" not in manifest:
        raise ModelDirError(f"{path}: no run config in the manifest; cannot rebuild the split")
    if "refit" in manifest:
        raise ModelDirError(
            f"{path}: this model was refit on every event, the test targets included, so a "
            "test run on it would score events it learned; its held-out metrics (measured "
            "before the refit) are in metrics.json. Train with --no-refit to evaluate the "
            "saved model itself."
        )
    try:
        config = RunConfig(**manifest["run_config"])
    except ValidationError as exc:
        raise ModelDirError(
            f"{path / MANIFEST}: invalid run_config: {first_validation_error(exc)}"
        ) from None
    model = Recommender.load(path)
    assert model.dataset is not None
    split = make_split(model.dataset, config.data.split)
    evaluation: EvaluationConfig = config.evaluation
    result = evaluate(
        model,
        split.test,
        ks=tuple(evaluation.ks),
        filter_seen=evaluation.filter_seen if filter_seen is None else filter_seen,
        users=evaluation.users,
    )
    return model, split, result


def count_parameters(model: Recommender) -> int:
    state: dict[str, Any] = model.saved_state()
    total = 0
    for value in _tensors(state):
        total += int(value.numel()) if hasattr(value, "numel") else int(value.size)
    return total


def _tensors(state: Any) -> list[Any]:
    if isinstance(state, dict):
        return [t for v in state.values() for t in _tensors(v)]
    return [state] if hasattr(state, "shape") else []
