"""EASE (Steck, WWW 2019): a closed-form linear item-item autoencoder."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy import sparse

from evorec.data.dataset import ITEM_IDX, USER_IDX, Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet
from evorec.models.base import ModelConfig, Recommender, register


class EASEConfig(ModelConfig):
    l2: float = Field(250.0, gt=0, description="L2 regularisation of the item-item weights")


@register
class EASE(Recommender):
    """Interest vector: the multi-hot history; item vector ``v_j = B[:, j]``."""

    name = "ease"
    config_class = EASEConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._weights = torch.zeros(0, 0)

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        pairs = train.events.select(USER_IDX, ITEM_IDX).unique()
        x = sparse.csr_matrix(
            (np.ones(pairs.height), (pairs[USER_IDX].to_numpy(), pairs[ITEM_IDX].to_numpy())),
            shape=(train.n_users, train.n_items),
        )
        gram = torch.from_numpy((x.T @ x).toarray())
        gram.diagonal().add_(self.config.l2)
        precision = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        weights = precision / (-precision.diagonal())
        weights.diagonal().zero_()
        self._weights = weights.float()

    def encode(self, histories: Histories) -> np.ndarray:
        multi_hot = np.zeros((len(histories), self._weights.shape[0]), dtype=np.float32)
        multi_hot[histories.rows, histories.items] = 1.0
        return multi_hot

    def item_vectors(self) -> np.ndarray:
        return self._weights.T.numpy()

    def score(self, histories: Histories) -> torch.Tensor:
        """``x · B`` computed as a sum of the history items' rows of ``B`` (x is sparse)."""
        pairs = np.unique(
            np.stack([histories.rows, histories.items]), axis=1
        )  # drop repeated items
        offsets = np.searchsorted(pairs[0], np.arange(len(histories)))
        return F.embedding_bag(
            torch.from_numpy(pairs[1].astype(np.int64)),
            self._weights,
            torch.from_numpy(offsets.astype(np.int64)),
            mode="sum",
        )

    def saved_state(self) -> dict[str, Any]:
        return {"weights": self._weights}

    def load_saved_state(self, state: dict[str, Any]) -> None:
        self._weights = state["weights"].float()
