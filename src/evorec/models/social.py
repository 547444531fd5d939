"""Social SASRec: interest that also flows along social ties (trust, friendship).

``i = i_seq + W · s_u``: ``i_seq`` is SASRec's interest vector of the history; ``s_u`` is a
social graph convolution over the user's out-edges (``u`` trusts/follows ``f``), in the
style of DiffNet (Wu et al., SIGIR 2019): each user starts as the mean embedding of the
items of their training history, ``K`` rounds of friend averaging ``Zᵏ⁺¹ = D⁻¹ S Zᵏ`` follow,
and ``s = mean(Z¹..Zᴷ)``. ``W`` starts at zero, so training decides how much the friends
count; everything is learned end to end with SASRec's objective.

The graph (training interactions and edges) is fixed at fit time and saved with the model.
Histories of known users carry their user (``Histories.users``); raw histories and users
without friends get ``i = i_seq``. ``use_social=False`` ignores the edges (the ablation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.social import social_edges
from evorec.data.split import EvalSet
from evorec.models.base import register
from evorec.models.graph import row_normalized
from evorec.models.sasrec import SASRec, SASRecConfig, SASRecNetwork
from evorec.models.sequential import EventFeatures

NO_USER = -1


class SocialConfig(SASRecConfig):
    social_layers: int = Field(2, ge=1, description="rounds of friend averaging K")
    use_social: bool = Field(True, description="use the dataset's user-user edges")


@dataclass(frozen=True)
class SocialFeatures(EventFeatures):
    """Event features plus the internal user of each row (``[batch]``, -1 = unknown)."""

    users: torch.Tensor | None = None

    def map(self, fn: Any) -> SocialFeatures:
        base = super().map(fn)
        return SocialFeatures(
            **{f.name: getattr(base, f.name) for f in fields(base)}, users=self.users
        )


@dataclass
class SocialGraph:
    """Training interactions (user, item) and directed social edges (user, friend)."""

    n_users: int
    users: np.ndarray
    items: np.ndarray
    trusters: np.ndarray
    trustees: np.ndarray


class SocialSASRecNetwork(SASRecNetwork):
    def __init__(self, n_items: int, config: SocialConfig, graph: SocialGraph) -> None:
        super().__init__(n_items, config)
        self.layers = config.social_layers
        self.n_edges = len(graph.trusters)
        shape = (graph.n_users, graph.n_users)
        self.history_mean = row_normalized(
            graph.users, graph.items + 1, (graph.n_users, n_items + 1)
        )
        self.friend_mean = row_normalized(graph.trusters, graph.trustees, shape)
        self.social_map = nn.Linear(config.dim, config.dim, bias=False)
        nn.init.zeros_(self.social_map.weight)

    def holds_int8_items(self) -> bool:
        return False  # the social vectors multiply the whole table

    def social_vectors(self) -> torch.Tensor:
        """``s`` of every user, ``[n_users, dim]``."""
        z = torch.sparse.mm(self.history_mean, self.item_embedding.weight)
        layers = []
        for _ in range(self.layers):
            z = torch.sparse.mm(self.friend_mean, z)
            layers.append(z)
        return torch.stack(layers).mean(0)

    def forward(self, items: torch.Tensor, features: EventFeatures | None = None) -> torch.Tensor:
        hidden = super().forward(items, features)
        users = features.users if isinstance(features, SocialFeatures) else None
        if users is None or self.n_edges == 0:
            return hidden
        known = users != NO_USER
        social = torch.zeros(len(users), hidden.shape[-1], device=hidden.device)
        social[known] = self.social_vectors()[users[known]]
        return hidden + self.social_map(social)[:, None, :]


@register
class SocialSASRec(SASRec):
    name = "social"
    config: SocialConfig
    config_class = SocialConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.graph: SocialGraph | None = None

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        hist = train.histories
        trusters, trustees = (
            social_edges(train)
            if self.config.use_social
            else (
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
            )
        )
        self.graph = SocialGraph(train.n_users, hist.rows, hist.items, trusters, trustees)
        super()._fit(train, valid, progress)

    def build_network(self, n_items: int) -> SocialSASRecNetwork:
        if self.graph is None:
            raise RuntimeError(f"{self.name} model has no social graph")
        return SocialSASRecNetwork(n_items, self.config, self.graph)

    def padded_batch(
        self, histories: Histories, width: int, device: torch.device
    ) -> tuple[torch.Tensor, EventFeatures, torch.Tensor]:
        items, features, lengths = super().padded_batch(histories, width, device)
        users = None
        if histories.users is not None:
            users = torch.from_numpy(histories.users).to(device)
        values = {f.name: getattr(features, f.name) for f in fields(features)}
        return items, SocialFeatures(**values, users=users), lengths

    def saved_state(self) -> dict[str, Any]:
        assert self.graph is not None
        graph = self.graph
        return {
            **super().saved_state(),
            "graph": {
                "n_users": graph.n_users,
                "users": graph.users,
                "items": graph.items,
                "trusters": graph.trusters,
                "trustees": graph.trustees,
            },
        }

    def load_saved_state(self, state: dict[str, Any]) -> None:
        graph = state["graph"]
        self.graph = SocialGraph(
            int(graph["n_users"]),
            *(graph[k].numpy() for k in ("users", "items", "trusters", "trustees")),
        )
        super().load_saved_state(state)
