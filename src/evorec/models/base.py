"""The contract every recommender follows: fit, encode, item vectors, recommend, save/load.

Scores are always ``s = i · v``: ``encode(histories)`` gives the interest vectors ``i`` and
``item_vectors()`` the item vectors ``v``, so exact scoring, serving and ANN retrieval work
the same for every model.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import polars as pl
import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from evorec import __version__
from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet, Split
from evorec.errors import ConfigError, DataError, EvorecError, ModelDirError
from evorec.evaluation.evaluator import exclude_seen

if TYPE_CHECKING:
    from evorec.retrieval import ItemIndex

MODEL_FORMAT = 1
MANIFEST = "evorec-model.json"

Self = TypeVar("Self", bound="Recommender")


class ModelConfig(BaseModel):
    """Base of every model's typed configuration."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0


class Recommender(ABC):
    """Base class of all evorec recommenders."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any):
        values = config.model_dump() if isinstance(config, ModelConfig) else dict(config or {})
        values.update(overrides)
        try:
            self.config = self.config_class(**values)
        except ValidationError as exc:
            raise ConfigError(f"invalid {self.name} config: {_first_error(exc)}") from None
        self.dataset: Dataset | None = None
        self.fit_info: dict[str, Any] = {}

    # -- to implement -------------------------------------------------------------------

    @abstractmethod
    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        """Learn parameters from ``train`` (validation data for early stopping, optional)."""

    @abstractmethod
    def encode(self, histories: Histories) -> np.ndarray:
        """Interest vectors ``i`` (``[rows, dim]``) of the given histories."""

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """Item vectors ``v`` (``[n_items, dim]``)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Learned parameters (tensors, arrays, numbers) to save."""

    @abstractmethod
    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_state` returned."""

    # -- shared behaviour ---------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self._require_fitted().n_items

    def fit(self: Self, data: Dataset | Split, *, progress: bool = False) -> Self:
        """Fit on a dataset, or on a split's training part with its validation set.

        After a split the model recommends from the split's full histories."""
        self.seed_rngs()
        if isinstance(data, Split):
            self._fit(data.train, data.valid, progress)
            self.dataset = data.full
        else:
            self._fit(data, None, progress)
            self.dataset = data
        return self

    def seed_rngs(self) -> None:
        """Seed torch's and NumPy's global generators with the config's seed."""
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed)

    def score(self, histories: Histories) -> torch.Tensor:
        """Scores of every item for each history, ``[rows, n_items]``."""
        interest = torch.from_numpy(np.ascontiguousarray(self.encode(histories), np.float32))
        items = torch.from_numpy(np.ascontiguousarray(self.item_vectors(), np.float32))
        return interest @ items.T

    def user_vectors(self, users: Iterable[Any]) -> np.ndarray:
        """Interest vectors of known users (original ids) from their stored histories."""
        dataset = self._require_fitted()
        return self.encode(dataset.histories.take(dataset.encode_users(users)))

    def recommend(
        self,
        users: Iterable[Any] | None = None,
        *,
        histories: Iterable[Iterable[Any]] | None = None,
        k: int = 10,
        filter_seen: bool = True,
        items: Iterable[Any] | None = None,
        index: ItemIndex | None = None,
    ) -> pl.DataFrame:
        """Top-``k`` items for known ``users`` or for raw ``histories`` (original item ids).

        ``items`` restricts the candidates; ``index`` (``evorec.retrieval.build_index`` of
        :meth:`item_vectors`) retrieves them instead of scoring every item. Returns
        ``user_id`` (or ``row`` for raw histories), ``item_id``, ``score`` and ``rank``
        (1 = best).
        """
        dataset = self._require_fitted()
        if (users is None) == (histories is None):
            raise EvorecError("give either users or histories")
        if users is not None:
            user_list = list(users)
            rows = dataset.encode_users(user_list)
            hist = dataset.histories.take(rows)
            # the stored ids, so that ids given as strings (CLI, files) come back typed
            key = dataset.user_ids.gather(rows).alias("user_id")
        else:
            raw = [list(h) for h in histories]
            hist = Histories.from_lists([dataset.encode_items(h) for h in raw])
            key = pl.Series("row", range(len(raw)), dtype=pl.Int64)
        allowed = None
        if items is not None:
            allowed = np.zeros(dataset.n_items, dtype=bool)
            allowed[dataset.encode_items(items)] = True
        if index is not None:
            top_scores, top_items = self._retrieve(index, hist, k, filter_seen, allowed)
        else:
            with torch.inference_mode():
                scores = self.score(hist).float()
                empty = torch.from_numpy(hist.lengths == 0)
                if empty.any():
                    popularity = torch.from_numpy(dataset.item_popularity.astype(np.float32))
                    scores[empty] = popularity
                if allowed is not None:
                    scores[:, torch.from_numpy(~allowed)] = -torch.inf
                if filter_seen:
                    exclude_seen(scores, hist)
                top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            top_scores, top_items = top.values.numpy(), top.indices.numpy()
        keep = np.isfinite(top_scores)
        counts = keep.sum(1)
        return pl.DataFrame(
            {
                key.name: key.gather(np.repeat(np.arange(len(key)), counts)),
                "item_id": dataset.item_ids.gather(top_items[keep]),
                "score": top_scores[keep].astype(np.float64),
                "rank": np.concatenate([np.arange(1, c + 1) for c in counts]).astype(np.int64)
                if len(counts)
                else np.zeros(0, np.int64),
            }
        )

    def _retrieve(
        self,
        index: ItemIndex,
        hist: Histories,
        k: int,
        filter_seen: bool,
        allowed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` scores and items through ``index``; empty histories by popularity."""
        from evorec.retrieval import exact_search  # faiss loads only when an index is used

        dataset = self._require_fitted()
        if index.n_items != dataset.n_items:
            raise EvorecError(
                f"the index holds {index.n_items} items, the {self.name} model {dataset.n_items}"
            )
        scores = np.full((len(hist), k), -np.inf, dtype=np.float32)
        items = np.full((len(hist), k), -1, dtype=np.int64)
        empty = hist.lengths == 0
        rows = np.flatnonzero(~empty)
        if len(rows):
            with torch.inference_mode():
                queries = self.encode(hist.take(rows))
            exclude = [hist[r] for r in rows] if filter_seen else None
            scores[rows], items[rows] = index.search(queries, k, exclude, allowed)
        if empty.any():
            popularity = dataset.item_popularity.astype(np.float32)[:, None]
            ones = np.ones((int(empty.sum()), 1), dtype=np.float32)
            scores[empty], items[empty] = exact_search(popularity, ones, k, None, allowed)
        return scores, items

    def _require_fitted(self) -> Dataset:
        if self.dataset is None:
            raise EvorecError(f"{self.name} model is not fitted")
        return self.dataset

    # -- persistence --------------------------------------------------------------------

    def save(
        self,
        path: str | Path,
        extra: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        keep: Iterable[str] = (),
    ) -> Path:
        """Write config, parameters and the id mappings/histories to ``path`` atomically.

        ``extra`` goes into the manifest; ``files`` maps file names to text written beside;
        ``keep`` names files of an existing ``path`` that the new directory takes over (a
        training checkpoint, for ``--resume`` later)."""
        dataset = self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            (tmp / "config.yaml").write_text(yaml.safe_dump(self.config.model_dump()))
            torch.save(_as_tensors(self._state()), tmp / "state.pt")
            dataset.save(tmp / "dataset")
            manifest = {
                "format": MODEL_FORMAT,
                "evorec_version": __version__,
                "model": self.name,
                "fit_info": self.fit_info,
                **(extra or {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            for name, text in (files or {}).items():
                (tmp / name).write_text(text)
            for name in keep:
                if (path / name).is_file():
                    os.replace(path / name, tmp / name)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load any saved model; called on a subclass, the directory must hold that model.

        Nothing in the directory is executed (``state.pt`` loads with ``weights_only``);
        every file that is missing, unreadable or inconsistent with the others is a
        :class:`ModelDirError` naming it."""
        from evorec.models import get_model_class

        path = Path(path)
        manifest = read_manifest(path)
        try:
            model_cls = get_model_class(manifest["model"])
        except ConfigError as exc:
            raise ModelDirError(f"{path / MANIFEST}: {exc}") from None
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise ModelDirError(f"{path} holds a {manifest['model']} model, not {cls.name}")
        model = _from_config(path / "config.yaml", model_cls)
        try:
            model.dataset = Dataset.load(path / "dataset")
        except DataError as exc:
            raise ModelDirError(str(exc)) from None
        model.fit_info = manifest.get("fit_info", {})
        _load_parameters(model, path / "state.pt")
        return model


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a model directory, after checking the directory is complete and
    the manifest's fields have their types."""
    if not path.is_dir():
        raise ModelDirError(f"{path}: model directory not found")
    missing = [
        n for n in (MANIFEST, "config.yaml", "state.pt", "dataset") if not (path / n).exists()
    ]
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


# the manifest fields read back, with the JSON kind each must have when present
MANIFEST_TYPES: dict[str, tuple[type, str]] = {
    "model": (str, "a string"),
    "evorec_version": (str, "a string"),
    "fit_info": (dict, "an object"),
    "run_config": (dict, "an object"),
    "cutoff": (dict, "an object"),
    "lineage": (list, "an array"),
}


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _from_config(file: Path, model_cls: type[Recommender]) -> Recommender:
    """An unfitted ``model_cls`` with the settings of ``config.yaml``."""
    try:
        config = yaml.safe_load(file.read_bytes())
    except OSError as exc:
        raise ModelDirError(f"{file}: cannot read the model config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise ModelDirError(f"{file}: not valid YAML{line} ({problem})") from None
    if not isinstance(config, dict) or not all(isinstance(key, str) for key in config):
        kind = "an empty file" if config is None else f"a {type(config).__name__}"
        raise ModelDirError(f"{file}: the model config is {kind}, not a mapping of settings")
    try:
        return model_cls(config)
    except ConfigError as exc:
        raise ModelDirError(f"{file}: {exc}") from None


def _load_parameters(model: Recommender, file: Path) -> None:
    """Restore ``model``'s parameters from ``state.pt`` and check that they give one
    finite item vector per item of its dataset."""
    if file.is_file() and file.stat().st_size == 0:
        raise ModelDirError(f"{file}: empty file (0 bytes), the parameters were never written")
    try:
        state = torch.load(file, weights_only=True)
    except OSError as exc:
        if exc.filename is not None:  # the file itself: a directory, unreadable
            raise ModelDirError(f"{file}: cannot read parameters ({exc.strerror})") from None
        reason = exc.strerror or _one_line(exc)
        raise ModelDirError(f"{file}: truncated or not a parameter file ({reason})") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise ModelDirError(
            f"{file}: truncated or not a parameter file ({_one_line(exc)})"
        ) from None
    if not isinstance(state, dict):
        raise ModelDirError(
            f"{file}: holds a {type(state).__name__}, not a mapping of named parameters"
        )
    dataset = model._require_fitted()
    try:
        model._load_state(state)
        vectors = np.asarray(model.item_vectors())
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RuntimeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else _one_line(exc)
        raise ModelDirError(
            f"{file}: parameters do not fit the {model.name} model of config.yaml ({detail})"
        ) from None
    if vectors.ndim != 2 or len(vectors) != dataset.n_items:
        raise ModelDirError(
            f"{file}: item vectors of shape {vectors.shape} for the {dataset.n_items} items "
            "of dataset/"
        )
    finite = np.isfinite(vectors).all(1)
    if not finite.all():
        item = dataset.item_ids[int(np.argmin(finite))]
        raise ModelDirError(f"{file}: the vector of item {item!r} is not finite")


def _one_line(exc: BaseException) -> str:
    """The first two lines of an error (torch puts the first mismatch on the second)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _as_tensors(state: Any) -> Any:
    """``state`` with NumPy arrays turned into tensors, so that ``state.pt`` loads with
    ``torch.load(weights_only=True)``; ``_load_state`` receives tensors for them."""
    if isinstance(state, dict):
        return {key: _as_tensors(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_as_tensors(value) for value in state)
    if isinstance(state, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(state))
    if isinstance(state, np.generic):
        return state.item()
    return state


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"
