"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional Transformer over the history, trained
on the cloze task.

Training masks each event with probability ``mask_prob`` (a sequence with none masked gets
its last event masked) and predicts the masked items with cross-entropy over the catalogue;
no other position is scored. A share ``next_item_prob`` of the sequences instead become
next-item examples, the inference task: cut after a random event, which alone is masked
(the paper's last-item samples, at every position of the history). At inference a
``[MASK]`` token is appended to the last ``max_len - 1`` events and its hidden state is the
interest vector ``i``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from evorec.data.histories import Histories
from evorec.models.base import register
from evorec.models.sequential import (
    EventFeatures,
    SequentialRecommender,
)
from evorec.models.trunks import AttentionConfig, AttentionNetwork


class BERT4RecConfig(AttentionConfig):
    max_len: int = Field(50, ge=2, description="events read, the appended [MASK] included")
    dropout: float = Field(0.1, ge=0, lt=1)
    heads: int = Field(2, ge=1)
    mask_prob: float = Field(0.2, gt=0, le=1, description="share of events masked in training")
    next_item_prob: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training sequences cut after a random event that alone is "
        "masked (next-item examples)",
    )


class BERT4RecNetwork(AttentionNetwork):
    """Item rows ``1..n_items``, padding row 0 and the ``[MASK]`` row ``n_items + 1``."""

    item_slice = slice(1, -1)

    def __init__(self, n_items: int, config: BERT4RecConfig) -> None:
        super().__init__(n_items + 2, config)
        self.head = nn.Sequential(
            nn.Linear(config.dim, config.dim), nn.GELU(), nn.LayerNorm(config.dim)
        )

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        # bidirectional: every position attends to every real (non-padding) one
        keys = (items > 0)[:, None, None, :]
        return self.head(self.attend(self.embed(items), [keys] * len(self.blocks)))


@register
class BERT4Rec(SequentialRecommender):
    name = "bert4rec"
    config: BERT4RecConfig
    config_class = BERT4RecConfig

    def build_network(self, n_items: int) -> BERT4RecNetwork:
        return BERT4RecNetwork(n_items, self.config)

    @property
    def mask_token(self) -> int:
        """The ``[MASK]`` row of the embedding table, after padding and the items."""
        return self.fitted_network().n_items + 1

    @property
    def train_window(self) -> int:
        return self.config.max_len

    def training_example(
        self, items: torch.Tensor, features: EventFeatures, generator: torch.Generator
    ) -> tuple[torch.Tensor, EventFeatures, torch.Tensor]:
        """Cloze (and next-item) examples: masked inputs, and the original items as
        targets at masked positions only."""
        real = items > 0
        lengths = real.sum(1)
        draw = torch.rand(items.shape, generator=generator).to(items.device)
        masked = (draw < self.config.mask_prob) & real
        unmasked = (~masked.any(1)).nonzero().squeeze(1)
        masked[unmasked, lengths[unmasked] - 1] = True
        inputs = items
        if self.config.next_item_prob > 0:
            rows = torch.rand(len(items), generator=generator).to(items.device)
            rows = (rows < self.config.next_item_prob) & (lengths >= 2)
            # the masked event: position 1 .. length - 1, the events after it dropped
            draw = torch.rand(len(items), generator=generator).to(items.device)
            cut = 1 + (draw * (lengths - 1)).long()
            positions = torch.arange(items.shape[1], device=items.device)
            masked[rows] = positions == cut[rows, None]
            inputs = items.masked_fill(rows[:, None] & (positions > cut[:, None]), 0)
        return inputs.masked_fill(masked, self.mask_token), features, items * masked

    def inference_batch(
        self, histories: Histories, device: torch.device
    ) -> tuple[torch.Tensor, EventFeatures, torch.Tensor]:
        """The last ``max_len - 1`` events followed by ``[MASK]``, read at the mask."""
        items, features, lengths = self.padded_batch(histories, self.config.max_len - 1, device)
        items = F.pad(items, (0, 1))
        items[torch.arange(len(items), device=device), lengths] = self.mask_token
        return items, features.map(lambda t: F.pad(t, (0, 1))), lengths
