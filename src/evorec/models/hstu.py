"""HSTU-style generative recommender (Zhai et al., "Actions Speak Louder than Words",
ICML 2024), trained autoregressively on the whole sequence.

Each layer projects the normed input with one ``SiLU(linear)`` into ``U, V, Q, K`` and
aggregates pointwise, without softmax: ``A = SiLU(QK^T + rab) / n`` under a causal mask,
``rab`` being learned per-head biases of the relative position and of the log2-bucketed
time interval (seconds; positions when the data only gives order) and ``n = max_len``;
then ``x + W_o(LayerNorm(A V) * U)``. Each event's behaviour type (click, cart, buy...)
is added to its input as an embedding; unknown behaviours share the padding embedding.
"""

from __future__ import annotations

import math

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
    interval_buckets,
)


class HSTUConfig(SequentialConfig):
    dropout: float = Field(0.2, ge=0, lt=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    time_buckets: int = Field(32, ge=2, description="log2 buckets of time intervals")


class HSTULayer(nn.Module):
    """Pointwise aggregated attention with U gating; the layer's relative biases."""

    def __init__(self, config: HSTUConfig) -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} is not divisible by heads {config.heads}")
        self.heads = config.heads
        self.n = config.max_len
        self.norm = nn.LayerNorm(config.dim)
        self.uvqk = nn.Linear(config.dim, 4 * config.dim)
        self.attn_norm = nn.LayerNorm(config.dim)
        self.out = nn.Linear(config.dim, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.position_bias = nn.Parameter(torch.zeros(config.heads, config.max_len))
        self.time_bias = nn.Embedding(config.time_buckets, config.heads)
        nn.init.zeros_(self.time_bias.weight)

    def forward(
        self, x: torch.Tensor, distance: torch.Tensor, buckets: torch.Tensor
    ) -> torch.Tensor:
        """``distance``: ``[L, L]`` query minus key position, negative above the diagonal;
        ``buckets``: ``[batch, L, L]`` interval buckets."""
        batch, length, dim = x.shape
        u, v, q, k = F.silu(self.uvqk(self.norm(x))).split(dim, dim=-1)
        v, q, k = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (v, q, k))
        scores = (
            q @ k.transpose(-1, -2)
            + self.position_bias[:, distance.clamp(0, self.n - 1)]
            + self.time_bias(buckets).permute(0, 3, 1, 2)
        )
        # Right padding: the causal mask keeps padding out of every real position.
        weights = (F.silu(scores) / self.n).masked_fill(distance < 0, 0.0)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
        return x + self.out(self.drop(self.attn_norm(attended) * u))


class HSTUNetwork(SequenceNetwork):
    def __init__(self, n_items: int, n_behaviors: int, config: HSTUConfig) -> None:
        super().__init__()
        self.scale = math.sqrt(config.dim)
        self.time_buckets = config.time_buckets
        self.item_embedding = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        self.behavior_embedding = nn.Embedding(n_behaviors + 1, config.dim, padding_idx=0)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(HSTULayer(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.item_embedding.weight, std=1.0 / self.scale)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        features = features or EventFeatures()
        positions = torch.arange(items.shape[1], device=items.device)
        x = self.embed_items(items) * self.scale + self.position_embedding(positions)
        if features.behaviors is not None:
            x = x + self.behavior_embedding(features.behaviors)
        x = self.drop(x)
        distance = positions[:, None] - positions[None, :]
        times = features.times(items)
        buckets = interval_buckets(times[:, :, None] - times[:, None, :], self.time_buckets)
        for layer in self.layers:
            x = layer(x, distance, buckets)
        return self.norm(x)


@register
class HSTU(SequentialRecommender):
    name = "hstu"
    config: HSTUConfig
    config_class = HSTUConfig

    def build_network(self, n_items: int) -> HSTUNetwork:
        """Behaviour embeddings for the vocabulary of the dataset being fitted or loaded."""
        return HSTUNetwork(n_items, len(self.fitted_dataset().behaviors), self.config)
