"""LSTM interest encoder: GRU4Rec's recurrent sequence-to-sequence model with an LSTM cell
(Hochreiter & Schmidhuber, 1997) in place of the GRU."""

from __future__ import annotations

from torch import nn

from evorec.models.base import register
from evorec.models.sequential import SequentialRecommender
from evorec.models.trunks import RecurrentConfig, RecurrentNetwork


class LSTMConfig(RecurrentConfig):
    """The LSTM's settings: the recurrent trunk's (see :mod:`evorec.models.trunks`)."""


@register
class LSTM(SequentialRecommender):
    name = "lstm"
    config: LSTMConfig
    config_class = LSTMConfig

    def build_network(self, n_items: int) -> RecurrentNetwork:
        return RecurrentNetwork(n_items, self.config, nn.LSTM)
