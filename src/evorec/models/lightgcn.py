"""LightGCN (He et al., SIGIR 2020): embeddings smoothed over the user-item graph.

Propagation ``E⁽ᵏ⁺¹⁾ = D^-1/2 A D^-1/2 E⁽ᵏ⁾`` over the training interactions, ``K`` layers,
final embeddings the mean of layers ``0..K``; trained with BPR or a sampled softmax and early
stopping on validation NDCG@10.

Interest of a history. The layer-0 embedding of a user is the mean of the layer-0
embeddings of the user's items instead of a free per-user parameter, so a user's final
embedding is a function of the history alone: ``encode`` applies exactly the propagation
training used (layer ``k`` of a user = ``Σᵢ Eᵢ⁽ᵏ⁻¹⁾ / √(|h| dᵢ)`` over the history's distinct
items, ``dᵢ`` = training degree), to known users' stored histories (``user_vectors``,
evaluation) and to raw histories alike. Item vectors ``v`` are the items' final embeddings.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet
from evorec.models.base import EpochSettings, ModelConfig, Recommender, register
from evorec.models.graph import bipartite_adjacency, row_normalized, unique_pairs


class LightGCNConfig(ModelConfig):
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0, description="propagation layers K")
    epochs: int = Field(300, ge=1)
    batch_size: int = Field(2048, ge=1, description="interactions per step")
    lr: float = Field(5e-3, gt=0)
    reg: float = Field(1e-4, ge=0, description="L2 weight on the batch's layer-0 embeddings")
    loss: Literal["bpr", "sampled_softmax"] = "bpr"
    n_negatives: int = Field(256, ge=1, description="uniform negatives per step (sampled softmax)")
    patience: int = Field(10, ge=1, description="epochs without validation gain before stopping")


class LightGCNNetwork(nn.Module):
    """Item layer-0 embeddings and the propagation over a fixed training graph."""

    def __init__(
        self, n_items: int, dim: int, layers: int, users: np.ndarray, items: np.ndarray
    ) -> None:
        super().__init__()
        self.n_items, self.layers = n_items, layers
        self.n_users = int(users.max()) + 1 if len(users) else 0
        self.item_embedding = nn.Embedding(n_items, dim)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        self.users, self.items = unique_pairs(users, items)
        self.adjacency = bipartite_adjacency(self.users, self.items, self.n_users, n_items)
        self.user_mean = row_normalized(self.users, self.items, (self.n_users, n_items))
        self.register_buffer(
            "item_degree",
            torch.from_numpy(np.bincount(self.items, minlength=n_items).astype(np.float32)),
        )

    def item_layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Layers ``0..K`` of the training users and items, ``[K + 1, n, dim]`` each."""
        items = self.item_embedding.weight
        nodes = torch.cat([torch.sparse.mm(self.user_mean, items), items])
        layers = [nodes]
        for _ in range(self.layers):
            nodes = torch.sparse.mm(self.adjacency, nodes)
            layers.append(nodes)
        stacked = torch.stack(layers)
        return stacked[:, : self.n_users], stacked[:, self.n_users :]

    def fold_in(self, rows: np.ndarray, items: np.ndarray, n_rows: int, item_layers: torch.Tensor):
        """Final embeddings of histories given as distinct ``(row, item)`` pairs: layer 0 the
        mean of the items' layer-0 embeddings, layer ``k`` the normalised sum of their layer
        ``k - 1`` embeddings, as the propagation does for a training user."""
        rows, items = unique_pairs(rows, items)
        length = np.bincount(rows, minlength=n_rows).astype(np.float32)
        shape = (n_rows, self.n_items)
        index = torch.from_numpy(np.stack([rows, items]))
        degree = self.item_degree[torch.from_numpy(items)].clamp(min=1)
        weight = torch.from_numpy(length[rows])
        mean = torch.sparse_coo_tensor(index, 1.0 / weight, shape, check_invariants=False)
        norm = torch.sparse_coo_tensor(
            index, 1.0 / torch.sqrt(weight * degree), shape, check_invariants=False
        )
        layers = [torch.sparse.mm(mean, item_layers[0])]
        layers += [torch.sparse.mm(norm, item_layers[k - 1]) for k in range(1, self.layers + 1)]
        return torch.stack(layers).mean(0)


@register
class LightGCN(Recommender):
    name = "lightgcn"
    config: LightGCNConfig
    config_class = LightGCNConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: LightGCNNetwork | None = None
        self._layers: torch.Tensor | None = None  # item layers of the current parameters

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        config = self.config
        hist = train.histories
        self.network = LightGCNNetwork(
            train.n_items, config.dim, config.layers, hist.rows, hist.items
        )
        self.dataset = train
        self.fit_info = self.fit_epochs(LightGCNTask(self, self.network), valid, progress)
        self._layers = None  # the restored best parameters give other item layers

    def _loss(
        self, users: torch.Tensor, positives: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        network = self.fitted_network()
        user_layers, item_layers = network.item_layers()
        user = user_layers.mean(0)[users]
        final_items = item_layers.mean(0)
        ego = network.item_embedding.weight
        if self.config.loss == "bpr":
            negatives = torch.randint(network.n_items, (len(users),), generator=generator)
            margin = (user * (final_items[positives] - final_items[negatives])).sum(-1)
            reg = ego[positives].pow(2).sum() + ego[negatives].pow(2).sum()
            return -F.logsigmoid(margin).mean() + self.config.reg * reg / (2 * len(users))
        negatives = torch.randint(network.n_items, (self.config.n_negatives,), generator=generator)
        positive = (user * final_items[positives]).sum(-1, keepdim=True)
        negative = (user @ final_items[negatives].T).masked_fill(
            negatives[None, :] == positives[:, None], -torch.inf
        )
        logits = torch.cat([positive, negative], dim=1)
        reg = ego[positives].pow(2).sum() / (2 * len(users))
        zeros = torch.zeros(len(users), dtype=torch.long)
        return F.cross_entropy(logits, zeros) + self.config.reg * reg

    def fitted_network(self) -> LightGCNNetwork:
        if self.network is None:
            raise RuntimeError(f"{self.name} model is not fitted")
        return self.network

    def _item_layers(self) -> torch.Tensor:
        if self._layers is None:
            with torch.no_grad():
                self._layers = self.fitted_network().item_layers()[1]
        return self._layers

    def encode(self, histories: Histories) -> np.ndarray:
        with torch.no_grad():
            vectors = self.fitted_network().fold_in(
                histories.rows, histories.items, len(histories), self._item_layers()
            )
        return vectors.numpy()

    def item_vectors(self) -> np.ndarray:
        return self._item_layers().mean(0).numpy()

    def saved_state(self) -> dict[str, Any]:
        network = self.fitted_network()
        return {
            "n_items": network.n_items,
            "users": network.users,
            "items": network.items,
            "item_embedding": network.item_embedding.weight.detach(),
        }

    def load_saved_state(self, state: dict[str, Any]) -> None:
        self.network = LightGCNNetwork(
            int(state["n_items"]),
            self.config.dim,
            self.config.layers,
            state["users"].numpy(),
            state["items"].numpy(),
        )
        self.network.item_embedding.weight.data.copy_(state["item_embedding"])
        self.network.eval()
        self._layers = None


class LightGCNTask:
    """LightGCN's epochs for the training loop: the training interactions in random
    batches, each a BPR (or sampled-softmax) loss after a full propagation."""

    def __init__(self, model: LightGCN, network: LightGCNNetwork) -> None:
        config = model.config
        self.model = model
        self.module = network
        self.users = torch.from_numpy(network.users)
        self.items = torch.from_numpy(network.items)
        self.examples = len(self.users)
        self.batch_size = config.batch_size
        self.optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.settings = EpochSettings(
            epochs=config.epochs, patience=config.patience, seed=config.seed
        )

    def batches(self) -> list[torch.Tensor]:
        order = torch.randperm(len(self.users), generator=self.generator)
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        self.model._layers = None  # the parameters change with every step
        return self.model._loss(self.users[batch], self.items[batch], self.generator), len(batch)

    def rng_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
