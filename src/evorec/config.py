"""Typed run configuration: YAML files plus ``key=value`` command-line overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from evorec.data.formats import DEFAULT_ENCODING, check_encoding
from evorec.data.preprocess import PreprocessConfig
from evorec.data.split import PROTOCOLS, split_methods
from evorec.errors import ConfigError, first_validation_error


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = Field(
        "leave-one-out",
        description="the split protocol (evorec.data.split): leave-one-out, temporal, "
        "cold-items (a share of the items held out of training entirely, the test asks for "
        "them) or next-purchase (the last two purchases are the test and validation targets)",
    )
    test_time: int | None = Field(None, description="temporal: unix time of the test cut")
    test_quantile: float = Field(0.9, gt=0, lt=1)
    valid_quantile: float = Field(0.8, gt=0, lt=1)
    cold_fraction: float = Field(0.1, gt=0, lt=1, description="cold-items: share of items")
    cold_seed: int = Field(0, description="cold-items: seed of the held-out items")
    behavior: str = Field("buy", description="next-purchase: the behaviour of the targets")

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        if method not in PROTOCOLS:
            raise PydanticCustomError(
                "split_method", f"use one of {', '.join(split_methods())}, not {method!r}"
            )
        return method


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    format: str = "auto"
    columns: dict[str, str] | None = Field(
        None, description="canonical name -> source column, e.g. {user_id: userId}"
    )
    on_bad_rows: Literal["drop", "error"] = "drop"
    encoding: str = Field(
        DEFAULT_ENCODING,
        description="text encoding of the data files (a Python codec name, e.g. latin-1)",
    )
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            check_encoding(encoding)
        except ConfigError as exc:
            raise PydanticCustomError("encoding", str(exc)) from None
        return encoding


class EvaluationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter_seen: bool | None = Field(
        None,
        description="remove history items from the ranking; default: unless users of the "
        "dataset take items again (repeat consumption)",
    )
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    users: int | None = Field(
        None,
        ge=2,
        description="evaluate the test split on a random sample of this many users; reports "
        "give the sample size and a 95% confidence interval",
    )


class RunConfig(BaseModel):
    """Everything ``evorec train`` needs; saved beside every trained model."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    model: dict[str, Any] = Field(default_factory=lambda: {"name": "sasrec"})
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @property
    def model_name(self) -> str:
        return str(self.model.get("name", "sasrec"))

    @property
    def model_params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}


def apply_override(values: dict[str, Any], assignment: str) -> None:
    """Set ``a.b.c=value`` in nested ``values``; the value is parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{assignment}' has an empty key")
    target = values
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{assignment}': '{part}' is not a section")
        target = node
    try:
        target[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"override '{assignment}': unreadable value ({_yaml_problem(exc)})"
        ) from None


def load_run_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then ``base``, then the YAML file, then the overrides."""
    values: dict[str, Any] = copy.deepcopy(base or {})  # merging must not edit the caller's
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({_yaml_problem(exc)})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of sections")
        _merge(values, loaded)
    for assignment in overrides or []:
        apply_override(values, assignment)
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"config field {first_validation_error(exc, quoted=True)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The gist of a YAML error on one line (PyYAML's own message spans several)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
