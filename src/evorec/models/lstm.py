"""LSTM interest encoder: GRU4Rec's recurrent sequence-to-sequence model with an LSTM cell
(Hochreiter & Schmidhuber, 1997) in place of the GRU."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from evorec.models.sequential import (
    EventFeatures,
    SequenceNetwork,
    SequentialConfig,
    SequentialRecommender,
)


class LSTMConfig(SequentialConfig):
    layers: int = Field(1, ge=1)


class LSTMNetwork(SequenceNetwork):
    def __init__(self, n_items: int, config: LSTMConfig) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.dim, config.dim, num_layers=config.layers, batch_first=True)
        self.project = nn.Linear(config.dim, config.dim)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        # Right padding: a forward recurrence never carries padding into real positions.
        hidden, _ = self.lstm(self.drop(self.item_embedding(items)))
        return self.project(self.drop(hidden))


class LSTM(SequentialRecommender):
    name = "lstm"
    config: LSTMConfig
    config_class = LSTMConfig

    def build_network(self, n_items: int) -> LSTMNetwork:
        return LSTMNetwork(n_items, self.config)
