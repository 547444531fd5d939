"""An ensemble of independently trained models of one kind, member ``k`` seeded
``seed + k``, whose scores add up.

The interest and item vectors are the members' vectors side by side, so ``s = i · v`` is
the sum of the members' scores and exact scoring, serving and ANN retrieval work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import Field

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet, Split
from evorec.errors import ConfigError
from evorec.models.base import ModelConfig, Recommender, get_model_class, register


class EnsembleConfig(ModelConfig):
    model: str = Field("sasrec", description="the members' model")
    members: int = Field(3, ge=1, le=32, description="members trained, seeds seed .. seed+n-1")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="the members' config (their seed is set per member)"
    )


@register
class Ensemble(Recommender):
    name = "ensemble"
    config: EnsembleConfig
    config_class = EnsembleConfig

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.members: list[Recommender] = []
        self.member(0)  # the member settings checked now, not after hours of training

    @classmethod
    def of(cls, members: Sequence[Recommender]) -> Ensemble:
        """The ensemble of already fitted ``members``: one model with one config, seeds
        ``s, s + 1, ...`` (as :meth:`fit` would train them)."""
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        first = members[0]
        settings = first.config.model_dump(exclude={"seed"})
        for k, member in enumerate(members):
            member._require_fitted()
            if (
                member.name != first.name
                or member.config.model_dump(exclude={"seed"}) != settings
                or member.config.seed != first.config.seed + k
            ):
                raise ConfigError(
                    f"ensemble member {k} is not a {first.name} model with the first member's "
                    f"settings and seed {first.config.seed + k}"
                )
        ensemble = cls(
            model=first.name, members=len(members), settings=settings, seed=first.config.seed
        )
        ensemble.members = list(members)
        ensemble.dataset = first.dataset
        ensemble.fit_info = {"members": [m.fit_info for m in members]}
        return ensemble

    def member(self, k: int) -> Recommender:
        """An unfitted member ``k``: the members' model and settings, seed ``seed + k``."""
        member_class = get_model_class(self.config.model)
        if member_class is Ensemble:
            raise ConfigError("invalid ensemble config: model: an ensemble cannot hold ensembles")
        return member_class({**self.config.settings, "seed": self.config.seed + k})

    def fit(
        self,
        data: Dataset | Split,
        *,
        progress: bool = False,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> Self:
        """As every model; the members train one after another without checkpoints (one
        training state per member would not fit one checkpoint file)."""
        super().fit(data, progress=progress)
        for member in self.members:
            member.dataset = self.dataset  # members recommend from the same histories
        return self

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        self.members = []
        for k in range(self.config.members):
            member = self.member(k)
            member.seed_rngs()
            member._fit(train, valid, progress)
            self.members.append(member)
        self.fit_info = {"members": [m.fit_info for m in self.members]}

    def _fitted_members(self) -> list[Recommender]:
        if not self.members:
            raise RuntimeError("ensemble model is not fitted")
        return self.members

    def encode(self, histories: Histories) -> np.ndarray:
        return np.concatenate([m.encode(histories) for m in self._fitted_members()], axis=1)

    def item_vectors(self) -> np.ndarray:
        return np.concatenate([m.item_vectors() for m in self._fitted_members()], axis=1)

    def _state(self) -> dict[str, Any]:
        return {"members": {str(k): m._state() for k, m in enumerate(self._fitted_members())}}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.members = []
        for k in range(self.config.members):
            member = self.member(k)
            member.dataset = self.dataset
            member._load_state(state["members"][str(k)])
            self.members.append(member)
