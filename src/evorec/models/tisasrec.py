"""TiSASRec-style time-aware SASRec (Li, Wang & McAuley, WSDM 2020).

SASRec whose attention scores get a learned per-head bias of the interval between the two
events, bucketed on a log2 scale (seconds; positions when the data only gives order), and
whose inputs get absolute time features where the data has timestamps: hour of day,
weekday and recency (log2 bucket of the time since the previous event).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from evorec.models.base import register
from evorec.models.sequential import (
    EventFeatures,
    SequentialRecommender,
    interval_buckets,
)
from evorec.models.trunks import AttentionConfig, AttentionNetwork

HOUR, DAY = 3600, 86400


class TiSASRecConfig(AttentionConfig):
    time_buckets: int = Field(32, ge=2, description="log2 buckets of time intervals")


def time_features(
    timestamps: torch.Tensor, n_buckets: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per event (``[batch, length]`` unix seconds): hour of day and weekday (UTC, Monday =
    0), and recency, the log2 bucket of the time since the previous event (``n_buckets``
    for a first event)."""
    hour = torch.div(timestamps, HOUR, rounding_mode="floor") % 24
    weekday = (torch.div(timestamps, DAY, rounding_mode="floor") + 3) % 7  # 1970-01-01: Thu
    gaps = interval_buckets(timestamps.diff(dim=1), n_buckets)
    return hour, weekday, F.pad(gaps, (1, 0), value=n_buckets)


class TiSASRecNetwork(AttentionNetwork):
    def __init__(self, n_items: int, config: TiSASRecConfig) -> None:
        super().__init__(n_items + 1, config)
        self.time_buckets = config.time_buckets
        self.hour_embedding = nn.Embedding(24, config.dim)
        self.weekday_embedding = nn.Embedding(7, config.dim)
        # the last row: the first event, which has no previous one
        self.recency_embedding = nn.Embedding(config.time_buckets + 1, config.dim)
        self.interval_bias = nn.ModuleList(
            nn.Embedding(config.time_buckets, config.heads) for _ in range(config.layers)
        )
        # time features and biases start at zero: the network starts as SASRec
        for table in (self.hour_embedding, self.weekday_embedding, self.recency_embedding):
            nn.init.zeros_(table.weight)
        for table in self.interval_bias:
            nn.init.zeros_(table.weight)

    def time_embedding(self, timestamps: torch.Tensor) -> torch.Tensor:
        """Sum of the hour, weekday and recency embeddings of each event."""
        hour, weekday, recency = time_features(timestamps, self.time_buckets)
        return (
            self.hour_embedding(hour)
            + self.weekday_embedding(weekday)
            + self.recency_embedding(recency)
        )

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        features = features or EventFeatures()
        length = items.shape[1]
        x = self.embed(items)
        if features.timestamps is not None:
            x = x + self.time_embedding(features.timestamps)
        times = features.times(items)
        buckets = interval_buckets(times[:, :, None] - times[:, None, :], self.time_buckets)
        # Right padding: the causal -inf keeps padding out of every real position.
        causal = torch.full((length, length), -torch.inf, device=items.device).triu(1)
        return self.attend(
            x, [bias(buckets).permute(0, 3, 1, 2) + causal for bias in self.interval_bias]
        )


@register
class TiSASRec(SequentialRecommender):
    name = "tisasrec"
    config: TiSASRecConfig
    config_class = TiSASRecConfig

    def build_network(self, n_items: int) -> TiSASRecNetwork:
        return TiSASRecNetwork(n_items, self.config)
