"""GRU4Rec (Hidasi et al., ICLR 2016): a recurrent encoder of the history, trained
sequence-to-sequence with cross-entropy over the catalogue."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from evorec.models.base import register
from evorec.models.sequential import (
    EventFeatures,
    SequenceNetwork,
    SequentialConfig,
    SequentialRecommender,
)


class GRU4RecConfig(SequentialConfig):
    layers: int = Field(1, ge=1)


class RecurrentNetwork(SequenceNetwork):
    """Item embeddings, a stack of recurrent layers (GRU or LSTM) and a projection."""

    def __init__(self, n_items: int, config: GRU4RecConfig, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = cell(config.dim, config.dim, num_layers=config.layers, batch_first=True)
        self.project = nn.Linear(config.dim, config.dim)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        # Right padding: a forward recurrence never carries padding into real positions.
        hidden, _ = self.rnn(self.drop(self.embed_items(items)))
        return self.project(self.drop(hidden))


@register
class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    config: GRU4RecConfig
    config_class = GRU4RecConfig

    def build_network(self, n_items: int) -> RecurrentNetwork:
        return RecurrentNetwork(n_items, self.config, nn.GRU)
