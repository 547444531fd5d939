"""``evorec compress``: a smaller or faster copy of a saved model, itself a model directory.

Methods (several may be joined with ``+``, at most one of each group):

- parameters (:mod:`evorec.models.compression`): ``fp16``, ``int8`` (per-row scales),
  ``dynamic-int8`` (int8 storage, linear layers quantised dynamically when loaded),
  ``prune`` (the encoder's smallest linear weights zeroed, ``sparsity``);
- item index: ``sq8`` (IVF with 8-bit scalar-quantised vectors) or ``pq`` (IVF-PQ), recorded
  as the directory's retrieval settings and built into it, so the service searches it;
- ``distill``: a small student of the same class (``student_dim``, ``student_layers``)
  trained on the model's scores over the leave-one-out split of its histories.

The new directory keeps the source's run config, cut-off and refit record, adds the source
to its lineage and records the method in ``compression``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evorec.config import RunConfig, SplitConfig
from evorec.data.split import make_split
from evorec.errors import ConfigError, first_validation_error
from evorec.modeldir import lineage, model_version, read_manifest
from evorec.models.base import Recommender
from evorec.models.compression import STATE_METHODS, prune_linear
from evorec.models.sequential import SequentialRecommender
from evorec.retrieval import load_or_build_index
from evorec.training.distill import distill

INDEX_METHODS = ("sq8", "pq")
METHODS = (*STATE_METHODS, *INDEX_METHODS, "distill")
KEPT = ("run_config", "protocol", "cutoff", "refit")  # manifest entries carried over


class CompressConfig(BaseModel):
    """Settings of :func:`compress`."""

    model_config = ConfigDict(extra="forbid")

    sparsity: float = Field(0.5, gt=0, lt=1, description="prune: share of weights zeroed")
    nprobe: int = Field(32, ge=1, description="sq8/pq: IVF cells scanned per query")
    pq_m: int | None = Field(None, ge=1, description="pq: sub-vectors per item vector")
    student_dim: int = Field(32, ge=1, description="distill: the student's width")
    student_layers: int = Field(1, ge=1, description="distill: the student's blocks")
    epochs: int = Field(100, ge=1, description="distill: most student epochs")
    alpha: float = Field(0.5, ge=0, le=1, description="distill: weight of the teacher's KL")
    temperature: float = Field(1.0, gt=0, description="distill: softmax temperature")


def parse_methods(text: str) -> list[str]:
    """``fp16``, ``int8+sq8``, ...: known methods, at most one parameter encoding and one
    index kind."""
    methods = [part.strip() for part in text.split("+") if part.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ConfigError(
            f"unknown compression method {'+'.join(unknown) or text!r}; use one of "
            f"{', '.join(METHODS)} (or several joined with +)"
        )
    groups = (STATE_METHODS, INDEX_METHODS, ("distill",))
    for group in groups:
        if sum(m in group for m in methods) > 1:
            raise ConfigError(f"--method {text}: at most one of {', '.join(group)}")
    return methods


def compress(
    model_dir: str | Path,
    out: str | Path,
    method: str,
    config: CompressConfig | dict[str, Any] | None = None,
    *,
    progress: bool = False,
) -> Path:
    """Write the compressed copy of ``model_dir`` to ``out``; its path."""
    methods = parse_methods(method)
    try:
        settings = (
            config if isinstance(config, CompressConfig) else CompressConfig(**(config or {}))
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid compress settings: {first_validation_error(exc)}") from None
    source = Path(model_dir)
    manifest = read_manifest(source)
    model = Recommender.load(source)
    if model.compression is not None:
        raise ConfigError(f"{source}: already compressed ({model.compression.get('method')})")
    record: dict[str, Any] = {"method": "+".join(methods), "source": model_version(source)}
    if "distill" in methods:
        model = _student(model, manifest, settings, progress)
        record.update(settings.model_dump(include={"alpha", "temperature"}))
    encoding = next((m for m in methods if m in STATE_METHODS), None)
    if encoding is not None:
        record["state"] = encoding
    if encoding == "prune":
        network = _sequence_network(model, "prune")
        record["pruned"] = sorted(prune_linear(network, settings.sparsity))
        record["sparsity"] = settings.sparsity
    extra = {key: manifest[key] for key in KEPT if key in manifest}
    extra["lineage"] = lineage(manifest, model_version(source))
    kind = next((m for m in methods if m in INDEX_METHODS), None)
    if kind is not None:
        extra["retrieval"] = {"kind": kind, "nprobe": settings.nprobe, "pq_m": settings.pq_m}
    model.compression = record
    path = model.save(out, extra=extra)
    if kind is not None:  # shipped with the model, as the service will search it
        loaded = Recommender.load(path)
        load_or_build_index(path, loaded.item_vectors())
    return path


def _sequence_network(model: Recommender, method: str) -> Any:
    if not isinstance(model, SequentialRecommender):
        raise ConfigError(f"{method} needs a neural sequence model, not {model.name}")
    return model.fitted_network()


def _student(
    teacher: Recommender, manifest: dict[str, Any], settings: CompressConfig, progress: bool
) -> SequentialRecommender:
    """A student of the teacher's class distilled on the teacher's split of its data."""
    _sequence_network(teacher, "distill")
    assert isinstance(teacher, SequentialRecommender) and teacher.dataset is not None
    split_config = (
        RunConfig(**manifest["run_config"]).data.split
        if "run_config" in manifest
        else SplitConfig()
    )
    split = make_split(teacher.dataset, split_config)
    values = teacher.config.model_dump()
    values.update(dim=settings.student_dim, epochs=settings.epochs)
    if "layers" in values:
        values["layers"] = settings.student_layers
    student = type(teacher)(values)
    return distill(
        student,
        teacher,
        split,
        alpha=settings.alpha,
        temperature=settings.temperature,
        progress=progress,
    )
