"""Shared encoder/scorer split of the sequence models.

A sequence network maps a right-padded batch of item sequences (``item + 1``, 0 = padding)
to one hidden state per position. The hidden state at a history's last event is the
interest vector ``i``; the item embedding table (without the padding row) gives ``v``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet
from evorec.models.base import ModelConfig, Recommender

ENCODE_BATCH = 1024


class SequentialConfig(ModelConfig):
    dim: int = Field(64, ge=1, description="width of item embeddings and hidden states")
    max_len: int = Field(50, ge=1, description="events of history the model reads")
    dropout: float = Field(0.3, ge=0, lt=1)
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    loss: Literal["softmax", "sampled_softmax"] = Field(
        "softmax", description="full softmax over the catalogue, or sampled with logQ correction"
    )
    n_negatives: int = Field(1024, ge=1, description="negatives per batch for sampled softmax")
    negative_power: float = Field(
        0.75, ge=0, description="negatives drawn with probability ~ popularity ** power"
    )
    patience: int = Field(5, ge=1, description="epochs without validation gain before stopping")
    valid_users: int | None = Field(
        None, ge=1, description="validate on this many users (all when unset)"
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'")


class SequenceNetwork(nn.Module):
    """A network over item sequences with a tied item embedding table."""

    item_embedding: nn.Embedding

    @abstractmethod
    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``[batch, length]`` padded item ids -> ``[batch, length, dim]`` hidden states.

        Position ``t`` may only depend on positions ``<= t``."""


class SequentialRecommender(Recommender):
    """Base of the neural sequence models; training lives in :mod:`evorec.training`."""

    config: SequentialConfig
    config_class = SequentialConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: SequenceNetwork | None = None
        self.checkpoint_path = None
        self.resume = False

    @abstractmethod
    def build_network(self, n_items: int) -> SequenceNetwork:
        """A freshly initialised network for a catalogue of ``n_items``."""

    @property
    def device(self) -> torch.device:
        if self.config.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.config.device)

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        from evorec.training.trainer import SequenceTrainer

        self.dataset = train
        self.network = self.build_network(train.n_items).to(self.device)
        trainer = SequenceTrainer(
            self,
            train,
            valid,
            progress=progress,
            checkpoint_path=self.checkpoint_path,
            resume=self.resume,
        )
        self.fit_info = trainer.run()

    def _network(self) -> SequenceNetwork:
        if self.network is None:
            raise RuntimeError(f"{self.name} model is not fitted")
        return self.network

    def encode(self, histories: Histories) -> np.ndarray:
        network = self._network()
        device = next(network.parameters()).device
        out = np.zeros((len(histories), self.config.dim), dtype=np.float32)
        order = np.argsort(histories.lengths, kind="stable")
        was_training = network.training
        network.eval()
        with torch.inference_mode():
            for start in range(0, len(order), ENCODE_BATCH):
                rows = order[start : start + ENCODE_BATCH]
                padded, lengths = histories.take(rows).padded(self.config.max_len)
                hidden = network(torch.from_numpy(padded).to(device))
                last = torch.from_numpy(np.maximum(lengths - 1, 0)).to(device)
                vectors = hidden[torch.arange(len(rows), device=device), last]
                vectors[torch.from_numpy(lengths == 0).to(device)] = 0.0
                out[rows] = vectors.float().cpu().numpy()
        network.train(was_training)
        return out

    def item_vectors(self) -> np.ndarray:
        weight = self._network().item_embedding.weight[1:]
        return weight.detach().float().cpu().numpy()

    def _state(self) -> dict[str, Any]:
        network = self._network()
        return {
            "n_items": network.item_embedding.num_embeddings - 1,
            "network": {k: v.cpu() for k, v in network.state_dict().items()},
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.network = self.build_network(int(state["n_items"])).to(self.device)
        self.network.load_state_dict(state["network"])
        self.network.eval()
