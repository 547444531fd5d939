"""An ensemble of independently trained models of one kind, member ``k`` seeded
``seed + k``, whose scores add up.

The interest and item vectors are the members' vectors side by side, so ``s = i · v`` is
the sum of the members' scores and exact scoring, serving and ANN retrieval work unchanged.

:class:`Sharded` is the ensemble of SISA training (Bourtoule et al., 2021): member ``k``
learns only from the users of shard ``k`` (a hash of the user id, :class:`~evorec.modeldir.
Shards`), so forgetting a user retrains one member and leaves the others as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl
from pydantic import Field

from evorec.data.dataset import USER_IDX, Dataset
from evorec.data.histories import Histories
from evorec.data.split import EvalSet, Split
from evorec.errors import ConfigError
from evorec.modeldir import Shards
from evorec.models.base import ModelConfig, Recommender, get_model_class, register
from evorec.retrieval.ranking import dense


class MembersConfig(ModelConfig):
    model: str = Field("sasrec", description="the members' model")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="the members' config (their seed is set per member)"
    )


class EnsembleConfig(MembersConfig):
    members: int = Field(3, ge=1, le=32, description="members trained, seeds seed .. seed+n-1")


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
            member.fitted_dataset()
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

    @property
    def n_members(self) -> int:
        return self.config.members

    def member(self, k: int, **overrides: Any) -> Recommender:
        """An unfitted member ``k``: the members' model and settings (with ``overrides``),
        seed ``seed + k``."""
        member_class = get_model_class(self.config.model)
        if issubclass(member_class, Ensemble):
            raise ConfigError(
                f"invalid {self.name} config: model: an ensemble cannot hold ensembles"
            )
        return member_class({**self.config.settings, **overrides, "seed": self.config.seed + k})

    def train_member(
        self,
        k: int,
        train: Dataset,
        valid: EvalSet | None,
        progress: bool,
        **overrides: Any,
    ) -> Recommender:
        """Member ``k`` trained on ``train`` (from its own seed, as :meth:`fit` trains it)."""
        member = self.member(k, **overrides)
        member.seed_rngs()
        member._fit(train, valid, progress)
        return member

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
        self.members = [self.train_member(k, train, valid, progress) for k in range(self.n_members)]
        self.fit_info = {"members": [m.fit_info for m in self.members]}

    def _fitted_members(self) -> list[Recommender]:
        if not self.members:
            raise RuntimeError("ensemble model is not fitted")
        return self.members

    def encode(self, histories: Histories) -> np.ndarray:
        return np.concatenate([m.encode(histories) for m in self._fitted_members()], axis=1)

    def item_vectors(self) -> np.ndarray:
        return np.concatenate([dense(m.item_vectors()) for m in self._fitted_members()], axis=1)

    def saved_state(self) -> dict[str, Any]:
        return {"members": {str(k): m.saved_state() for k, m in enumerate(self._fitted_members())}}

    def load_saved_state(self, state: dict[str, Any]) -> None:
        self.members = []
        for k in range(self.n_members):
            member = self.member(k)
            member.dataset = self.dataset
            member.load_saved_state(state["members"][str(k)])
            self.members.append(member)


class ShardedConfig(MembersConfig):
    shards: int = Field(4, ge=1, le=64, description="user shards, one member each")


@register
class Sharded(Ensemble):
    """SISA: the training users split into ``shards`` by a hash of their id, member ``k``
    (seed ``seed + k``) trained on the events and validation targets of shard ``k``
    alone; scores add up as in :class:`Ensemble`. Saved with the manifest's ``shards``
    entry (the rule and each shard's user count)."""

    name = "sharded"
    config: ShardedConfig  # type: ignore[assignment]
    config_class = ShardedConfig

    @property
    def n_members(self) -> int:
        return self.config.shards

    @property
    def shards(self) -> Shards:
        return Shards(self.config.shards)

    def user_shards(self, dataset: Dataset) -> np.ndarray:
        """The shard of each internal user of ``dataset``."""
        return self.shards.of(dataset.user_ids.cast(pl.Utf8))

    def shard_data(self, k: int, dataset: Dataset, shard: np.ndarray) -> Dataset:
        """``dataset`` with the events of shard ``k``'s users alone (same id space)."""
        mine = pl.Series(shard == k).gather(dataset.events[USER_IDX])
        return dataset.with_events(dataset.events.filter(mine))

    def _fit(self, train: Dataset, valid: EvalSet | None, progress: bool) -> None:
        shard = self.user_shards(train)
        self.members = []
        for k in range(self.n_members):
            own = None
            if valid is not None:
                rows = np.flatnonzero(shard[valid.users] == k)
                own = EvalSet(
                    valid.users[rows],
                    valid.histories.take(rows),
                    valid.targets.take(rows),
                    valid.filter_seen,
                )
            data = self.shard_data(k, train, shard)
            self.members.append(self.train_member(k, data, own, progress))
        self.fit_info = {"members": [m.fit_info for m in self.members]}

    def retrained(
        self,
        dataset: Dataset,
        shards: Sequence[int],
        progress: bool = False,
        settings: dict[int, dict[str, Any]] | None = None,
    ) -> Sharded:
        """A copy that recommends from ``dataset`` (this model's, some users left out) with
        the members of ``shards`` trained afresh on it (``settings``: per member, overrides
        of the members' settings, such as the epochs a refit chose); the other members are
        these very objects, unchanged."""
        fitted = self._fitted_members()
        shard = self.user_shards(dataset)
        members = list(fitted)
        for k in sorted(set(shards)):
            data = self.shard_data(k, dataset, shard)
            members[k] = self.train_member(k, data, None, progress, **(settings or {}).get(k, {}))
        for member in members:
            member.dataset = dataset
        copy = Sharded(self.config)
        copy.members = members
        copy.dataset = dataset
        copy.fit_info = {"members": [m.fit_info for m in members]}
        return copy

    def save(
        self,
        path: str | Path,
        extra: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        keep: Iterable[str] = (),
    ) -> Path:
        """As every model, with the manifest's ``shards`` entry."""
        record = self.shards.record(self.fitted_dataset().user_ids.cast(pl.Utf8))
        return super().save(path, {**(extra or {}), "shards": record}, files, keep)
