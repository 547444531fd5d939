"""GRU4Rec (Hidasi et al., ICLR 2016): a recurrent encoder of the history, trained
sequence-to-sequence with cross-entropy over the catalogue."""

from __future__ import annotations

from torch import nn

from evorec.models.base import register
from evorec.models.sequential import SequentialRecommender
from evorec.models.trunks import RecurrentConfig, RecurrentNetwork


class GRU4RecConfig(RecurrentConfig):
    """GRU4Rec's settings: the recurrent trunk's (see :mod:`evorec.models.trunks`)."""


@register
class GRU4Rec(SequentialRecommender):
    name = "gru4rec"
    config: GRU4RecConfig
    config_class = GRU4RecConfig

    def build_network(self, n_items: int) -> RecurrentNetwork:
        return RecurrentNetwork(n_items, self.config, nn.GRU)
