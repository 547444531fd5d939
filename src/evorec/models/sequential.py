"""Shared encoder/scorer split of the sequence models.

A sequence network maps a right-padded batch of item sequences (``item + 1``, 0 = padding),
with the aligned :class:`EventFeatures` (timestamps, behaviours), to one hidden state per
position. The hidden state at a history's last event is the interest vector ``i``; the
item rows of the embedding table give ``v``. An int8-compressed model holds that table as
int8 rows (:class:`~evorec.models.compression.Int8Embedding`) where the network reads it by
rows only: histories look their rows up dequantised, and ``v`` is the int8 rows themselves.

Training is next-item prediction unless a model overrides ``training_example`` (BERT4Rec's
cloze task), with one output head unless it overrides ``training_heads`` (multi-task);
``inference_batch`` says which position's hidden state is ``i``. :class:`SequenceTask`
gives the training loop the batches and the loss.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet
from evorec.errors import EvorecError
from evorec.features import (
    DEFAULT_TEXT_MODEL,
    Fusion,
    ItemEncoder,
    ItemFeatures,
    UserEncoder,
    UserFeatures,
    build_item_features,
    build_user_features,
)
from evorec.models.base import EpochSettings, ModelConfig, Recommender
from evorec.models.compression import ITEM_TABLE, Int8Embedding, decode, is_encoded
from evorec.models.optim import RowSparseAdamW
from evorec.retrieval.ranking import ItemVectors

ENCODE_BATCH = 1024


class SequentialConfig(ModelConfig):
    dim: int = Field(64, ge=1, description="width of item embeddings and hidden states")
    max_len: int = Field(50, ge=1, description="events of history the model reads")
    dropout: float = Field(0.3, ge=0, lt=1)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    item_features: list[Literal["id", "attributes", "numeric", "text"]] = Field(
        ["id"], min_length=1, description="parts of each item vector (see evorec.features)"
    )
    fusion: Fusion = Field("sum", description="how item parts combine: sum, concat, gated")
    text_model: str = Field(DEFAULT_TEXT_MODEL, description="sentence model for item text")
    user_features: bool = Field(
        False,
        description="add a vector of the user's profile (the user table's categorical and "
        "numeric columns) to the interest vector",
    )
    id_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of items trained without their id part (cold start)"
    )
    loss: Literal["softmax", "sampled_softmax", "gbce"] = Field(
        "softmax",
        description="full softmax over the catalogue, sampled softmax with logQ correction, "
        "or gBCE (generalised binary cross-entropy over sampled negatives, gSASRec)",
    )
    n_negatives: int = Field(
        1024, ge=1, description="negatives per batch for sampled softmax and gBCE"
    )
    gbce_t: float = Field(
        0.75,
        ge=0,
        le=1,
        description="gBCE calibration: 0 is plain BCE, 1 calibrates the scores to the full "
        "catalogue's probabilities (assumes uniform negatives: negative_power 0)",
    )
    negatives: Literal["shared", "per_position"] = Field(
        "shared",
        description="sampled negatives: one set of n_negatives for every position of a "
        "batch, or a set drawn for each position (more distinct negatives, n_negatives item "
        "rows per position)",
    )
    negative_power: float = Field(
        0.75, ge=0, description="negatives drawn with probability ~ popularity ** power"
    )
    train_on: Literal["all", "last"] = Field(
        "all",
        description="every event of each training history, cut into consecutive windows of "
        "max_len, or only each history's last window",
    )
    temperature: float | None = Field(
        None,
        gt=0,
        description="score by cosine similarity (unit-length i and v) divided by this "
        "temperature in training, instead of the plain dot product",
    )
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="learning rate after warm-up: constant, or a cosine or linear decay to 0 "
        "at the last of the epochs",
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="epochs over which the learning rate rises linearly from 0"
    )
    patience: int = Field(5, ge=1, description="epochs without validation gain before stopping")
    valid_users: int | None = Field(
        None, ge=1, description="validate on this many users (all when unset)"
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'")
    amp: bool = Field(False, description="train under bf16 autocast (CUDA with bf16 support only)")
    accumulate: int = Field(1, ge=1, description="batches whose gradients make one step")
    compile: bool = Field(
        False, description="train through torch.compile (dynamic shapes); see docs/benchmarks.md"
    )
    sparse_items: bool = Field(
        False,
        description="row-wise sparse updates of the item table: lazy Adam on the rows a batch "
        "touches (no weight decay on them), AdamW on the rest; for big catalogues, with "
        "sampled_softmax or gbce and item_features [id]",
    )

    @model_validator(mode="after")
    def _sparse_needs_sampled_ids(self) -> SequentialConfig:
        if self.sparse_items and (self.loss == "softmax" or self.item_features != ["id"]):
            raise ValueError(
                "sparse_items needs loss sampled_softmax or gbce (a full softmax touches "
                "every row) and item_features [id] (content encoders make every row dense)"
            )
        return self


@dataclass(frozen=True)
class EventFeatures:
    """Per-position side features of a padded item batch, ``[batch, length]`` each.

    ``timestamps``: event times in seconds (None when the data only gives order);
    ``behaviors``: behaviour code + 1, 0 = padding or unknown (None without behaviours).
    """

    timestamps: torch.Tensor | None = None
    behaviors: torch.Tensor | None = None

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> EventFeatures:
        """``fn`` applied to every present feature (slicing, moving to a device)."""
        return EventFeatures(
            None if self.timestamps is None else fn(self.timestamps),
            None if self.behaviors is None else fn(self.behaviors),
        )

    def times(self, items: torch.Tensor) -> torch.Tensor:
        """The event times, or the positions when the data only gives order."""
        if self.timestamps is not None:
            return self.timestamps
        return torch.arange(items.shape[1], device=items.device).expand_as(items)


def interval_buckets(delta: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """``|delta|`` on a log2 scale: 0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ..., clipped to
    ``n_buckets - 1``."""
    magnitude = delta.abs().double().clamp(min=1)
    buckets = torch.floor(torch.log2(magnitude)).long() + 1
    return torch.where(delta == 0, 0, buckets).clamp(max=n_buckets - 1)


class SequenceNetwork(nn.Module):
    """A network over item sequences with a tied item embedding table; with an
    ``item_encoder`` the table's item rows are fused with the items' content."""

    item_embedding: nn.Embedding | Int8Embedding
    sparse_rows = False  # item rows looked up with sparse gradients (``sparse_items``)
    item_slice: ClassVar[slice] = slice(1, None)  # the table's item rows (row 0: padding)

    def __init__(self) -> None:
        super().__init__()
        # the optional parts, set by the model that builds the network when its config asks
        # for them: the items' content fused into the table, the user's profile vector
        self.item_encoder: ItemEncoder | None = None
        self.user_encoder: UserEncoder | None = None

    @abstractmethod
    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        """``[batch, length]`` padded item ids -> ``[batch, length, dim]`` hidden states.

        Causal networks: position ``t`` may only depend on positions ``<= t``."""

    @property
    def n_items(self) -> int:
        """Items of the table (its rows in :attr:`item_slice`)."""
        return len(range(self.item_embedding.num_embeddings)[self.item_slice])

    def holds_int8_items(self) -> bool:
        """Whether an int8 item table can stay int8 here: the network reads it by row
        lookups only, and its rows are the item vectors (no content fused in)."""
        return self.item_encoder is None

    def item_table(self) -> torch.Tensor:
        """The item table (row 0 = padding), computed anew each call so that training
        reaches the content encoders."""
        table = self.item_embedding
        if isinstance(table, Int8Embedding):
            raise EvorecError(
                "the item table is held int8 (an int8-compressed model): it is read by rows, "
                "never whole"
            )
        weight = table.weight
        return weight if self.item_encoder is None else self.item_encoder(weight)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of :meth:`item_table` for padded item ids (an int8 table's dequantised)."""
        if isinstance(self.item_embedding, Int8Embedding):
            return self.item_embedding(items)
        if self.sparse_rows:
            return F.embedding(items, self.item_embedding.weight, padding_idx=0, sparse=True)
        return F.embedding(items, self.item_table(), padding_idx=0)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of :meth:`item_weights` for item indices (0-based), the gradient reaching
        only those rows when :attr:`sparse_rows`."""
        if self.sparse_rows:
            return F.embedding(items + 1, self.item_embedding.weight, sparse=True)
        return self.item_weights()[items]

    def item_weights(self) -> torch.Tensor:
        """The item vectors ``v``, ``[n_items, dim]``: the table rows of real items."""
        return self.item_table()[self.item_slice]

    def condition(self, hidden: torch.Tensor, users: np.ndarray | None) -> torch.Tensor:
        """Hidden states ``[batch, ..., dim]`` plus each row's user-profile vector, when the
        network has a user encoder and the rows' internal users are known."""
        if self.user_encoder is None or users is None:
            return hidden
        profile = self.user_encoder(torch.from_numpy(users).to(hidden.device))
        return hidden + profile.view(len(users), *[1] * (hidden.dim() - 2), -1)


class SequentialRecommender(Recommender):
    """Base of the neural sequence models; training lives in :mod:`evorec.training`."""

    config: SequentialConfig
    config_class = SequentialConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: SequenceNetwork | None = None
        self.features: ItemFeatures | None = None
        self.user_profiles: UserFeatures | None = None

    @abstractmethod
    def build_network(self, n_items: int) -> SequenceNetwork:
        """A freshly initialised network for a catalogue of ``n_items``."""

    @property
    def train_window(self) -> int:
        """Events per training sequence: ``max_len`` inputs and the next-item target."""
        return self.config.max_len + 1

    def training_sequences(self, histories: Histories) -> Histories:
        """The sequences to train on, of at least two events each: every history cut into
        :attr:`train_window` windows starting ``max_len`` apart (each event is a target
        once), or only each history's last window (``train_on: last``)."""
        window = self.train_window
        cut = (
            histories.windows(window, self.config.max_len)
            if self.config.train_on == "all"
            else histories.last(window)
        )
        return cut.take(np.flatnonzero(cut.lengths >= 2))

    def padded_batch(
        self, histories: Histories, width: int, device: torch.device
    ) -> tuple[torch.Tensor, EventFeatures, torch.Tensor]:
        """The last ``width`` events of each history as padded items and features on
        ``device``, with the row lengths. Timestamps only where the data has real times."""
        padded = histories.padded_events(width)
        has_time = self.dataset is not None and self.dataset.has_time

        def tensor(array: np.ndarray | None) -> torch.Tensor | None:
            return None if array is None else torch.from_numpy(array).to(device)

        features = EventFeatures(
            tensor(padded.timestamps) if has_time else None, tensor(padded.behaviors)
        )
        items = torch.from_numpy(padded.items).to(device)
        return items, features, torch.from_numpy(padded.lengths).to(device)

    def training_example(
        self, items: torch.Tensor, features: EventFeatures, generator: torch.Generator
    ) -> tuple[torch.Tensor, EventFeatures, torch.Tensor]:
        """Network inputs, their features and the targets (``item + 1``, 0 = not scored)
        of a padded batch of :attr:`train_window` events: each position predicts the next
        item, so inputs and their features drop the last column and targets the first."""
        return items[:, :-1], features.map(lambda t: t[:, :-1]), items[:, 1:]

    def training_trunk(self, network: SequenceNetwork) -> Callable[..., torch.Tensor]:
        """What maps training inputs and features to the hidden states the heads read."""
        return network

    def training_heads(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        features: EventFeatures,
        users: np.ndarray | None,
    ) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """``(weight, scored positions, interest vectors)`` of each training task, from the
        trunk's ``hidden`` states, the targets, the features of the whole training window
        and the rows' users; the loss is the weighted sum of the heads' cross-entropies. One
        head by default: every position with a target, the conditioned hidden states."""
        return [(1.0, targets > 0, self.fitted_network().condition(hidden, users))]

    @property
    def validation_filter_seen(self) -> bool | None:
        """Seen-item filtering of validation rankings; None: as the validation set says."""
        return None

    def inference_batch(
        self, histories: Histories, device: torch.device
    ) -> tuple[torch.Tensor, EventFeatures, torch.Tensor]:
        """Network inputs and features of ``histories``, with the position per row whose
        hidden state is the interest vector (the last event)."""
        items, features, lengths = self.padded_batch(histories, self.config.max_len, device)
        return items, features, (lengths - 1).clamp(min=0)

    @property
    def device(self) -> torch.device:
        if self.config.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.config.device)

    def scoring_space(
        self, hidden: torch.Tensor, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Interest and item vectors as their dot product scores them: unchanged, or unit
        length with the interest vectors divided by ``temperature``."""
        if self.config.temperature is None:
            return hidden, items
        return (
            F.normalize(hidden, dim=-1) / self.config.temperature,
            F.normalize(items, dim=-1),
        )

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        self.prepare(train, progress)
        self.fit_info = self.fit_epochs(SequenceTask(self, train), valid, progress)

    def prepare(self, train: Dataset, progress: bool) -> None:
        """The training data's content and profile features, and a fresh network."""
        self.dataset = train
        kinds = self.config.item_features
        self.features = (
            None
            if kinds == ["id"]
            else build_item_features(
                train, kinds, text_model=self.config.text_model, progress=progress
            )
        )
        self.user_profiles = build_user_features(train) if self.config.user_features else None
        self.network = self.new_network(train.n_items)

    def new_network(self, n_items: int) -> SequenceNetwork:
        """:meth:`build_network`, with the item encoder when the model uses content."""
        network = self.build_network(n_items)
        if self.features is not None:
            network.item_encoder = ItemEncoder(
                self.features,
                self.config.item_features,
                self.config.dim,
                self.config.fusion,
                self.config.id_dropout,
            )
        if self.user_profiles is not None:
            network.user_encoder = UserEncoder(self.user_profiles, self.config.dim)
        network.sparse_rows = self.config.sparse_items
        return network.to(self.device)

    def fitted_network(self) -> SequenceNetwork:
        if self.network is None:
            raise RuntimeError(f"{self.name} model is not fitted")
        return self.network

    def encode(self, histories: Histories) -> np.ndarray:
        network = self.fitted_network()
        device = next(network.parameters()).device
        out = np.zeros((len(histories), self.config.dim), dtype=np.float32)
        order = np.argsort(histories.lengths, kind="stable")
        was_training = network.training
        network.eval()
        with torch.inference_mode():
            for start in range(0, len(order), ENCODE_BATCH):
                rows = order[start : start + ENCODE_BATCH]
                batch = histories.take(rows)
                items, features, read = self.inference_batch(batch, device)
                hidden = network(items, features)
                vectors = network.condition(
                    hidden[torch.arange(len(rows), device=device), read], batch.users
                )
                if self.config.temperature is not None:
                    vectors = F.normalize(vectors, dim=-1)
                vectors[torch.from_numpy(batch.lengths == 0).to(device)] = 0.0
                out[rows] = vectors.float().cpu().numpy()
        network.train(was_training)
        return out

    def item_vectors(self) -> ItemVectors:
        """The item rows of the table: float32, or an int8 table's own rows (no copy)."""
        network = self.fitted_network()
        table = network.item_embedding
        if isinstance(table, Int8Embedding):
            vectors = table.vectors(network.item_slice)
            return vectors if self.config.temperature is None else vectors.unit_length()
        weights = network.item_weights().detach()
        if self.config.temperature is not None:
            weights = F.normalize(weights, dim=-1)
        return weights.float().cpu().numpy()

    def saved_state(self) -> dict[str, Any]:
        network = self.fitted_network()
        values = {k: v.cpu() for k, v in network.state_dict().items()}
        table = network.item_embedding
        if isinstance(table, Int8Embedding):  # in the encoded form it was loaded from
            values = {k: v for k, v in values.items() if not k.startswith("item_embedding.")}
            values[ITEM_TABLE] = table.encoded()
        state = {"n_items": network.n_items, "network": values}
        if self.features is not None:
            state["features"] = self.features.state()
        if self.user_profiles is not None:
            state["user_features"] = self.user_profiles.state()
        return state

    def load_saved_state(self, state: dict[str, Any]) -> None:
        if "features" in state:
            self.features = ItemFeatures.from_state(state["features"])
        if "user_features" in state:
            self.user_profiles = UserFeatures.from_state(state["user_features"])
        self.network = self.new_network(int(state["n_items"]))
        values = dict(state["network"])
        table = values.get(ITEM_TABLE)
        if is_encoded(table):
            if self.network.holds_int8_items():
                self.network.item_embedding = Int8Embedding(*table["q"].shape).to(self.device)
                del values[ITEM_TABLE]
                values["item_embedding.codes"] = table["q"]
                values["item_embedding.scale"] = table["scale"]
            else:
                values[ITEM_TABLE] = decode(table)
        self.network.load_state_dict(values)
        self.network.eval()


def lr_factor(
    progress: float,
    epochs: int,
    warmup_epochs: float = 0.0,
    schedule: Literal["constant", "cosine", "linear"] = "constant",
) -> float:
    """Multiplier of the base learning rate ``progress`` epochs (fractional) into training
    for ``epochs``: linear warm-up over ``warmup_epochs``, then constant, or decaying to 0
    at ``epochs`` along a half cosine or a line."""
    if progress < warmup_epochs:
        return progress / warmup_epochs
    if schedule == "constant":
        return 1.0
    span = epochs - warmup_epochs
    done = min((progress - warmup_epochs) / span, 1.0) if span > 0 else 1.0
    return 0.5 * (1.0 + math.cos(math.pi * done)) if schedule == "cosine" else 1.0 - done


def schedule_lr(optimizer: torch.optim.Optimizer, config: SequentialConfig, steps: int) -> None:
    """Set ``optimizer``'s learning rate before each of its steps by :func:`lr_factor`, with
    ``steps`` optimizer steps an epoch. Progress is read from the optimizer's own step count,
    so a resumed optimizer continues the schedule where it stopped."""

    def before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        done = max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0)
        factor = lr_factor(
            (done + 1) / steps, config.epochs, config.warmup_epochs, config.lr_schedule
        )
        for group in optimizer.param_groups:
            group["lr"] = config.lr * factor

    optimizer.register_step_pre_hook(before_step)


def optimizer(network: SequenceNetwork, config: SequentialConfig) -> torch.optim.Optimizer:
    """AdamW over the network, or with ``sparse_items`` AdamW over all but the item table
    and lazy Adam over the item table's rows (:class:`~evorec.models.optim.RowSparseAdamW`)."""
    if not network.sparse_rows:
        return torch.optim.AdamW(
            network.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    table = network.item_embedding.weight
    rest = [p for p in network.parameters() if p is not table]
    return RowSparseAdamW(rest, [table], lr=config.lr, weight_decay=config.weight_decay)


class SequenceTask:
    """Sequence-to-sequence training for the loop: every scored position of a training
    sequence (the targets of the model's ``training_example``) is a cross-entropy over the
    full catalogue, a sampled softmax with logQ correction, or gBCE over sampled negatives.
    Batches group sequences of similar length and the output layer runs only at scored
    positions, so padding costs almost nothing."""

    def __init__(self, model: SequentialRecommender, train: Dataset) -> None:
        config = model.config
        self.model = model
        self.config = config
        self.network = self.module = model.fitted_network()
        self.device = next(self.network.parameters()).device
        self.sequences = model.training_sequences(train.histories)
        self.examples = len(self.sequences)
        popularity = train.item_popularity.astype(np.float64) ** config.negative_power
        self.negative_probs = torch.from_numpy(popularity / popularity.sum()).float()
        # logQ correction of every item, on the device once (not per step: big catalogues)
        self.log_q = torch.log(self.negative_probs * config.n_negatives).to(self.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.optimizer = optimizer(self.network, config)
        if config.lr_schedule != "constant" or config.warmup_epochs > 0:
            batches = math.ceil(self.examples / config.batch_size)
            schedule_lr(self.optimizer, config, math.ceil(batches / config.accumulate))
        self.settings = EpochSettings(
            epochs=config.epochs,
            patience=config.patience,
            seed=config.seed,
            accumulate=config.accumulate,
            amp=config.amp and self.device.type == "cuda" and torch.cuda.is_bf16_supported(),
            device_type=self.device.type,
            valid_users=config.valid_users,
            valid_filter_seen=model.validation_filter_seen,
        )
        trunk = model.training_trunk(self.network)
        # batches vary in length and size: one dynamic-shape graph instead of one per shape
        self.forward = torch.compile(trunk, dynamic=True) if config.compile else trunk

    def batches(self) -> list[np.ndarray]:
        """Rows grouped by length (random order among equal lengths), batches shuffled."""
        lengths = self.sequences.lengths
        order = np.lexsort((self.rng.random(len(lengths)), lengths))
        size = self.config.batch_size
        groups = [order[i : i + size] for i in range(0, len(order), size)]
        self.rng.shuffle(groups)
        return groups

    def loss(self, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """Weighted cross-entropy of the heads over the scored positions of the batch
        ``rows``, and the first head's count of positions."""
        model = self.model
        batch = self.sequences.take(rows)
        items, features, _ = model.padded_batch(batch, model.train_window, self.device)
        inputs, input_features, targets = model.training_example(items, features, self.generator)
        hidden = self.forward(inputs, input_features)
        heads = model.training_heads(hidden, targets, features, batch.users)
        if not heads:  # nothing scored in this batch: a zero loss that still backpropagates
            return hidden.sum() * 0.0, 0
        total = None
        for weight, mask, vectors in heads:
            head = weight * self.output_loss(vectors[mask], targets[mask] - 1)
            total = head if total is None else total + head
        assert total is not None
        return total, int(heads[0][1].sum())

    def output_loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss (``config.loss``) of interest vectors ``hidden`` for the items ``target``."""
        if self.config.loss == "softmax":
            hidden, weight = self.model.scoring_space(hidden, self.network.item_weights())
            return F.cross_entropy(hidden @ weight.T, target)
        n, k = len(target), self.config.n_negatives
        per_position = self.config.negatives == "per_position"
        negatives = torch.multinomial(
            self.negative_probs,
            k * n if per_position else k,
            replacement=True,
            generator=self.generator,
        ).to(self.device)
        # only the rows of the targets and the negatives
        rows = self.network.item_rows(torch.cat([target, negatives]))
        hidden, rows = self.model.scoring_space(hidden, rows)
        positive = (hidden * rows[:n]).sum(-1, keepdim=True)
        if per_position:  # [n, k]: each position's own negatives
            negatives = negatives.view(n, k)
            negative = torch.einsum("nd,nkd->nk", hidden, rows[n:].view(n, k, -1))
        else:  # [k]: one set for every position
            negative = hidden @ rows[n:].T
        collision = negatives == target[:, None]
        if self.config.loss == "gbce":
            return self.gbce(positive, negative.masked_fill(collision, -torch.inf))
        log_q = self.log_q
        positive = positive - log_q[target, None]
        negative = (negative - log_q[negatives]).masked_fill(collision, -torch.inf)
        logits = torch.cat([positive, negative], dim=1)
        zeros = torch.zeros(len(target), dtype=torch.long, device=self.device)
        return F.cross_entropy(logits, zeros)

    def gbce(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """gBCE (Petrov & Macdonald, RecSys 2023) of positive scores ``[n, 1]`` and negative
        scores ``[n, k]`` (-inf: not a negative): ``-beta log sigmoid(s+) - sum log(1 -
        sigmoid(s-))``, ``beta = alpha (t (1 - 1/alpha) + 1/alpha)`` for the sampling rate
        ``alpha = k / (n_items - 1)``, averaged over the positions."""
        alpha = self.config.n_negatives / max(len(self.negative_probs) - 1, 1)
        beta = alpha * (self.config.gbce_t * (1 - 1 / alpha) + 1 / alpha)
        positive_loss = beta * F.softplus(-positive.squeeze(1))
        return (positive_loss + F.softplus(negative).sum(1)).mean()

    def rng_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "generator": self.generator.get_state()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
