"""MostPopular: every user gets the items with the most training interactions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet
from evorec.models.base import ModelConfig, Recommender, register


class PopularConfig(ModelConfig):
    pass


@register
class MostPopular(Recommender):
    """Interest vector ``[1]``, item vector ``[share of training interactions]``."""

    name = "pop"
    config_class = PopularConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._popularity = np.zeros(0, dtype=np.float32)

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        counts = train.item_popularity.astype(np.float64)
        self._popularity = (counts / max(counts.sum(), 1.0)).astype(np.float32)

    def encode(self, histories: Histories) -> np.ndarray:
        return np.ones((len(histories), 1), dtype=np.float32)

    def item_vectors(self) -> np.ndarray:
        return self._popularity[:, None]

    def saved_state(self) -> dict[str, Any]:
        return {"popularity": torch.from_numpy(self._popularity)}

    def load_saved_state(self, state: dict[str, Any]) -> None:
        self._popularity = state["popularity"].numpy().astype(np.float32)
