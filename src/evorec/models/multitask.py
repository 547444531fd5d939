"""Multi-task interest over behaviour types (views, carts, favourites, purchases).

A shared SASRec trunk (:class:`~evorec.models.trunks.AttentionNetwork`) reads the history
with a behaviour embedding added to every event; two task towers (residual MLPs) map its
hidden states to interest vectors scored against the shared item embeddings: the *item*
tower predicts the next event's item, the *purchase* tower the next item the user buys
(trained only at positions whose next event is a purchase). The loss is
``item_weight · CE_item + purchase_weight · CE_purchase``; ``serve`` picks the tower whose
vector is ``i``. ``purchase_weight=0, serve=item`` is the single-task model. Item content
(``item_features``) and user profiles (``user_features``) enter as in every sequence model.
Data without the purchase behaviour trains and serves the item tower alone (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from evorec.data.dataset import Dataset
from evorec.data.split import EvalSet
from evorec.models.base import register
from evorec.models.sequential import EventFeatures, SequenceNetwork, SequentialRecommender
from evorec.models.trunks import AttentionConfig, AttentionNetwork

TASKS = ("item", "purchase")
log = logging.getLogger(__name__)


class MultiTaskConfig(AttentionConfig):
    purchase_behavior: str = Field("buy", description="the behaviour that counts as a purchase")
    item_weight: float = Field(1.0, ge=0, description="weight of the next-item loss")
    purchase_weight: float = Field(1.0, ge=0, description="weight of the next-purchase loss")
    serve: Literal["item", "purchase"] = Field("purchase", description="tower that gives i")
    valid_filter_seen: bool = Field(
        False,
        description="remove history items from the validation ranking (purchases are mostly "
        "of items viewed before, so off by default)",
    )


class Tower(nn.Module):
    """``h + MLP(h)``, normalised."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden + self.mlp(hidden))


class MultiTaskNetwork(AttentionNetwork):
    def __init__(self, n_items: int, n_behaviors: int, config: MultiTaskConfig, serve: str) -> None:
        super().__init__(n_items + 1, config)
        self.behavior_embedding = nn.Embedding(n_behaviors + 1, config.dim, padding_idx=0)
        self.towers = nn.ModuleDict({task: Tower(config.dim, config.dropout) for task in TASKS})
        self.serve = serve

    def trunk(self, items: torch.Tensor, features: EventFeatures | None) -> torch.Tensor:
        x = self.embed(items)
        if features is not None and features.behaviors is not None:
            x = x + self.behavior_embedding(features.behaviors)
        return self.attend(x)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        return self.towers[self.serve](self.trunk(items, features))


@register
class MultiTask(SequentialRecommender):
    name = "multitask"
    config: MultiTaskConfig
    config_class = MultiTaskConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.n_behaviors = 0
        self.serve: str = self.config.serve

    def build_network(self, n_items: int) -> MultiTaskNetwork:
        return MultiTaskNetwork(n_items, self.n_behaviors, self.config, self.serve)

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        self.serve = self.config.serve
        if self.config.purchase_behavior not in train.behaviors:
            self.serve = "item"
            log.warning(
                "multitask: no '%s' events in the data; training and serving the item tower",
                self.config.purchase_behavior,
            )
        self.n_behaviors = len(train.behaviors)
        super()._fit(train, valid, progress)

    def training_trunk(self, network: SequenceNetwork) -> Callable[..., torch.Tensor]:
        assert isinstance(network, MultiTaskNetwork)
        return network.trunk

    def training_heads(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        features: EventFeatures,
        users: np.ndarray | None,
    ) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """The item tower at every position, the purchase tower where the next event is a
        purchase; a head without weight or without positions in the batch is left out."""
        network = self.fitted_network()
        assert isinstance(network, MultiTaskNetwork)
        config = self.config
        scored = {"item": (config.item_weight, targets > 0)}
        behaviors = self.fitted_dataset().behaviors
        if config.purchase_behavior in behaviors and features.behaviors is not None:
            purchase = behaviors.index(config.purchase_behavior) + 1  # padded code
            scored["purchase"] = (config.purchase_weight, features.behaviors[:, 1:] == purchase)
        return [
            (weight, mask, network.condition(network.towers[task](hidden), users))
            for task, (weight, mask) in scored.items()
            if weight > 0 and mask.any()
        ]

    @property
    def validation_filter_seen(self) -> bool | None:
        return self.config.valid_filter_seen

    def saved_state(self) -> dict[str, Any]:
        return {**super().saved_state(), "n_behaviors": self.n_behaviors, "serve": self.serve}

    def load_saved_state(self, state: dict[str, Any]) -> None:
        self.n_behaviors = int(state["n_behaviors"])
        self.serve = state["serve"]
        super().load_saved_state(state)
