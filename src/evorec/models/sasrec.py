"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder of the history,
trained with cross-entropy over the catalogue (Klenitskiy & Vasilev, RecSys 2023)."""

from __future__ import annotations

import torch

from evorec.models.base import register
from evorec.models.sequential import EventFeatures, SequentialRecommender
from evorec.models.trunks import AttentionConfig, AttentionNetwork


class SASRecConfig(AttentionConfig):
    """SASRec's settings: the attention trunk's (see :mod:`evorec.models.trunks`)."""


class SASRecNetwork(AttentionNetwork):
    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__(n_items + 1, config)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        return self.attend(self.embed(items))


@register
class SASRec(SequentialRecommender):
    name = "sasrec"
    config: SASRecConfig
    config_class = SASRecConfig

    def build_network(self, n_items: int) -> SASRecNetwork:
        return SASRecNetwork(n_items, self.config)
