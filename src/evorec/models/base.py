"""The contract every recommender follows: fit, encode, item vectors, recommend, save/load.

Scores are always ``s = i · v``: ``encode(histories)`` gives the interest vectors ``i`` and
``item_vectors()`` the item vectors ``v``, so exact scoring, serving and ANN retrieval work
the same for every model.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import numpy as np
import polars as pl
import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet, Split
from evorec.errors import (
    ConfigError,
    DataError,
    EvorecError,
    ModelDirError,
    first_validation_error,
)
from evorec.modeldir import (
    CONFIG,
    DATASET,
    MANIFEST,
    STATE,
    read_manifest,
    recorded_compression,
    write_model_dir,
)
from evorec.models.compression import after_load, compress_state, decode_state
from evorec.retrieval.ranking import (
    Fallback,
    Int8Vectors,
    ItemVectors,
    Ranking,
    finite_rows,
    inner_products,
    rank,
)

if TYPE_CHECKING:
    from evorec.models.explain import Explanation
    from evorec.retrieval import ItemIndex

Self = TypeVar("Self", bound="Recommender")


@dataclass(frozen=True)
class EpochSettings:
    """How the training loop runs a model's epochs."""

    epochs: int
    patience: int  # epochs without validation gain before stopping
    seed: int
    accumulate: int = 1  # batches whose gradients make one optimizer step
    amp: bool = False  # bf16 autocast (only where the device supports it)
    device_type: str = "cpu"
    valid_users: int | None = None  # validate on a random subset of this many users
    valid_filter_seen: bool | None = None  # None: as the validation set says


class EpochTask(Protocol):
    """What the training loop of :mod:`evorec.training.loop` asks of a model trained in
    epochs: its parameters and optimizer, one epoch's batches and a batch's loss."""

    module: torch.nn.Module  # trained; its best state is restored and checkpointed
    optimizer: torch.optim.Optimizer
    settings: EpochSettings
    examples: int  # training examples per epoch (sequences, interactions)

    def batches(self) -> Sequence[Any]:
        """One epoch's batches, in training order."""
        ...

    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """Mean loss of ``batch`` and the number of scored examples it averages over."""
        ...

    def rng_state(self) -> dict[str, Any]:
        """The generators' states, for checkpoints."""
        ...

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`rng_state` returned."""
        ...


TrainingLoop = Callable[..., dict[str, Any]]
_training_loop: list[TrainingLoop] = []


def use_training_loop(loop: TrainingLoop) -> None:
    """Set the loop that models trained in epochs fit with; :mod:`evorec.training` sets it
    when it is imported (as ``import evorec`` does), so models never import training."""
    _training_loop[:] = [loop]


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
            problem = first_validation_error(exc)
            raise ConfigError(f"invalid {self.name} config: {problem}") from None
        self.dataset: Dataset | None = None
        self.fit_info: dict[str, Any] = {}
        self.compression: dict[str, Any] | None = None  # how save stores the parameters
        self._checkpoint: Path | None = None  # of the fit in progress
        self._resume = False

    # -- to implement -------------------------------------------------------------------

    @abstractmethod
    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        """Learn parameters from ``train`` (validation data for early stopping, optional)."""

    @abstractmethod
    def encode(self, histories: Histories) -> np.ndarray:
        """Interest vectors ``i`` (``[rows, dim]``) of the given histories."""

    @abstractmethod
    def item_vectors(self) -> ItemVectors:
        """Item vectors ``v`` (``[n_items, dim]``): a float32 matrix, or
        :class:`~evorec.retrieval.ranking.Int8Vectors` for a model that holds them int8."""

    @abstractmethod
    def saved_state(self) -> dict[str, Any]:
        """Learned parameters (tensors, arrays, numbers) to save."""

    @abstractmethod
    def load_saved_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`saved_state` returned."""

    # -- shared behaviour ---------------------------------------------------------------

    @property
    def n_items(self) -> int:
        return self.fitted_dataset().n_items

    def fit(
        self: Self,
        data: Dataset | Split,
        *,
        progress: bool = False,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> Self:
        """Fit on a dataset, or on a split's training part with its validation set.

        After a split the model recommends from the split's full histories. A model trained
        in epochs writes its training state to ``checkpoint`` after every epoch and, with
        ``resume``, continues from the one there."""
        self.seed_rngs()
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._resume = resume
        try:
            if isinstance(data, Split):
                self._fit(data.train, data.valid, progress)
                self.dataset = data.full
            else:
                self._fit(data, None, progress)
                self.dataset = data
        finally:
            self._checkpoint, self._resume = None, False
        return self

    def fit_epochs(self, task: EpochTask, valid: EvalSet | None, progress: bool) -> dict:
        """Run ``task`` through the training loop, with this fit's checkpoint; the fit info."""
        if not _training_loop:
            raise EvorecError(f"{self.name}: no training loop; import evorec.training first")
        return _training_loop[0](
            self, task, valid, progress=progress, checkpoint=self._checkpoint, resume=self._resume
        )

    def seed_rngs(self) -> None:
        """Seed torch's and NumPy's global generators with the config's seed."""
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed)

    def score(self, histories: Histories) -> torch.Tensor:
        """Scores of every item for each history, ``[rows, n_items]``."""
        interest = torch.from_numpy(np.ascontiguousarray(self.encode(histories), np.float32))
        return inner_products(interest, self.item_vectors())

    def user_vectors(self, users: Iterable[Any]) -> np.ndarray:
        """Interest vectors of known users (original ids) from their stored histories."""
        dataset = self.fitted_dataset()
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
        dataset = self.fitted_dataset()
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
        seen = hist if filter_seen else None
        ranking = self.rank(hist, k, exclude=seen, allowed=allowed, index=index)
        top_scores, top_items = ranking.scores, ranking.items
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

    def recommend_batches(
        self,
        users: Iterable[Any] | None = None,
        *,
        batch: int = 4096,
        k: int = 10,
        filter_seen: bool = True,
        items: Iterable[Any] | None = None,
        index: ItemIndex | None = None,
    ) -> Iterator[pl.DataFrame]:
        """:meth:`recommend` for ``users`` (default: every user of the fitted data),
        ``batch`` users at a time, so that writing them out holds one batch in memory."""
        if batch < 1:
            raise EvorecError(f"batch must be at least 1, got {batch}")
        ids = self.fitted_dataset().user_ids if users is None else list(users)
        allowed = None if items is None else list(items)
        for start in range(0, len(ids), batch):
            yield self.recommend(
                ids[start : start + batch], k=k, filter_seen=filter_seen, items=allowed, index=index
            )

    def explain(
        self,
        user: Any | None = None,
        *,
        history: Iterable[Any] | None = None,
        timestamps: Iterable[int] | None = None,
        item: Any | None = None,
        top: int = 10,
    ) -> Explanation:
        """Which events of a known ``user``'s history (or of a raw ``history`` of original
        item ids, oldest first) drive ``item`` (default: the top recommendation): the
        ``top`` events by occlusion score change, with the attention view where the model
        has one (see :mod:`evorec.models.explain`)."""
        from evorec.models.explain import explain

        return explain(self, user, history=history, timestamps=timestamps, item=item, top=top)

    def rank(
        self,
        histories: Histories,
        k: int,
        *,
        exclude: Histories | Sequence[np.ndarray] | None = None,
        allowed: np.ndarray | None = None,
        index: ItemIndex | None = None,
    ) -> Ranking:
        """Top-``k`` item indices for each history (:func:`evorec.retrieval.ranking.rank`):
        ``i`` searched in ``index`` or, without one, :meth:`score` of every item; a history
        with no event gets the most popular items through the same filters. ``exclude[r]``
        lists items never returned for row ``r``, ``allowed`` masks the candidates."""
        dataset = self.fitted_dataset()
        if index is not None and index.n_items != dataset.n_items:
            raise EvorecError(
                f"the index holds {index.n_items} items, the {self.name} model {dataset.n_items}"
            )
        usable = histories.lengths > 0
        ranked = histories if usable.all() else histories.take(np.flatnonzero(usable))
        queries = scores = None
        if len(ranked):
            with torch.inference_mode():
                if index is None:
                    scores = self.score(ranked).float()
                else:
                    queries = self.encode(ranked)
        return rank(
            k,
            queries=queries,
            items=index,
            scores=scores,
            exclude=exclude,
            allowed=allowed,
            fallback=Fallback(~usable, dataset.item_popularity),
        )

    def fitted_dataset(self) -> Dataset:
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
        dataset = self.fitted_dataset()

        def write(tmp: Path) -> None:
            (tmp / CONFIG).write_text(yaml.safe_dump(self.config.model_dump()))
            state = compress_state(self.saved_state(), self.compression)
            torch.save(_as_tensors(state), tmp / STATE)
            dataset.save(tmp / DATASET)

        manifest = {"model": self.name, "fit_info": self.fit_info, **(extra or {})}
        if self.compression is not None:
            manifest["compression"] = self.compression
        return write_model_dir(path, manifest, write, files, keep)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load any saved model; called on a subclass, the directory must hold that model.

        Nothing in the directory is executed (``state.pt`` loads with ``weights_only``);
        every file that is missing, unreadable or inconsistent with the others is a
        :class:`ModelDirError` naming it."""
        path = Path(path)
        manifest = read_manifest(path)
        try:
            model_cls = get_model_class(manifest["model"])
        except ConfigError as exc:
            raise ModelDirError(f"{path / MANIFEST}: {exc}") from None
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise ModelDirError(f"{path} holds a {manifest['model']} model, not {cls.name}")
        model = _from_config(path / CONFIG, model_cls)
        try:
            model.dataset = Dataset.load(path / DATASET)
        except DataError as exc:
            raise ModelDirError(str(exc)) from None
        model.fit_info = manifest.get("fit_info", {})
        model.compression = recorded_compression(manifest)
        _load_parameters(model, path / STATE)
        after_load(model, path / STATE)
        return model


MODELS: dict[str, type[Recommender]] = {}  # by name, filled by @register
ALIASES = {"mostpop": "pop", "popular": "pop", "most_popular": "pop"}
R = TypeVar("R", bound=type[Recommender])


def register(cls: R) -> R:
    """Class decorator: make a model known by its ``name`` (CLI, configs, loading)."""
    if cls.name in MODELS:
        raise ValueError(f"two models named {cls.name!r}: {MODELS[cls.name]} and {cls}")
    MODELS[cls.name] = cls
    return cls


def get_model_class(name: str) -> type[Recommender]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose from {', '.join(MODELS)}")
    return MODELS[key]


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
    dataset = model.fitted_dataset()
    state = decode_state(state, model.compression, file)
    try:
        model.load_saved_state(state)
        vectors = model.item_vectors()
        if not isinstance(vectors, Int8Vectors):
            vectors = np.asarray(vectors)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RuntimeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else _one_line(exc)
        raise ModelDirError(
            f"{file}: parameters do not fit the {model.name} model of config.yaml ({detail})"
        ) from None
    if len(vectors.shape) != 2 or len(vectors) != dataset.n_items:
        raise ModelDirError(
            f"{file}: item vectors of shape {vectors.shape} for the {dataset.n_items} items "
            "of dataset/"
        )
    finite = finite_rows(vectors)
    if not finite.all():
        item = dataset.item_ids[int(np.argmin(finite))]
        raise ModelDirError(f"{file}: the vector of item {item!r} is not finite")


def _one_line(exc: BaseException) -> str:
    """The first two lines of an error (torch puts the first mismatch on the second)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _as_tensors(state: Any) -> Any:
    """``state`` with NumPy arrays turned into tensors, so that ``state.pt`` loads with
    ``torch.load(weights_only=True)``; ``load_saved_state`` receives tensors for them."""
    if isinstance(state, dict):
        return {key: _as_tensors(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_as_tensors(value) for value in state)
    if isinstance(state, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(state))
    if isinstance(state, np.generic):
        return state.item()
    return state
