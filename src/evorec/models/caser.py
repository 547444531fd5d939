"""Caser (Tang & Wang, WSDM 2018): horizontal and vertical convolutions over the embeddings
of the last ``window`` events.

Trained sequence-to-sequence like the other sequence models: each position convolves over
the window of events ending at it (left-padded with zero embeddings), so its hidden state
depends only on positions ``<= t``. There is no user embedding: the interest vector comes
from the history alone, and the output item vectors are the tied input embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from evorec.models.base import register
from evorec.models.sequential import (
    EventFeatures,
    SequenceNetwork,
    SequentialConfig,
    SequentialRecommender,
)


class CaserConfig(SequentialConfig):
    window: int = Field(5, ge=1, description="L: events each position convolves over")
    horizontal: int = Field(16, ge=1, description="horizontal filters of each height 1..L")
    vertical: int = Field(4, ge=1, description="vertical filters")


class CaserNetwork(SequenceNetwork):
    def __init__(self, n_items: int, config: CaserConfig) -> None:
        super().__init__()
        dim, window = config.dim, config.window
        self.window = window
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        # a height-h filter spans h consecutive events and the whole embedding
        self.horizontal = nn.ModuleList(
            nn.Conv1d(dim, config.horizontal, height) for height in range(1, window + 1)
        )
        # a vertical filter is a weighted sum of the window's L embeddings
        self.vertical = nn.Conv1d(1, config.vertical, window)
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.horizontal * window + config.vertical * dim, dim)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        batch, length = items.shape
        # [batch, dim, window - 1 + length]: the window ending at t covers columns t..t+L-1
        x = F.pad(self.embed_items(items).transpose(1, 2), (self.window - 1, 0))
        dim = x.shape[1]
        pooled = [
            # max over the L - h + 1 height-h spans inside each window
            F.max_pool1d(F.relu(conv(x)), self.window - height + 1, stride=1)
            for height, conv in enumerate(self.horizontal, 1)
        ]
        horizontal = torch.cat(pooled, dim=1).transpose(1, 2)  # [batch, length, n_h * L]
        vertical = self.vertical(x.reshape(batch * dim, 1, -1))  # [batch * dim, n_v, length]
        vertical = vertical.view(batch, dim, -1, length).permute(0, 3, 2, 1).flatten(2)
        return F.relu(self.fc(self.drop(torch.cat([horizontal, vertical], dim=-1))))


@register
class Caser(SequentialRecommender):
    name = "caser"
    config: CaserConfig
    config_class = CaserConfig

    def build_network(self, n_items: int) -> CaserNetwork:
        return CaserNetwork(n_items, self.config)
