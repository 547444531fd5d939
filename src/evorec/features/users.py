"""User profiles (age, gender, occupation, ...) as a vector added to the interest vector.

The profile columns of a dataset's user table follow the item rules: list, string and
integer columns are categorical (one token per ``column=value``), float columns numeric
(z-scored); the id columns and ``friends`` (the social graph, read by the social model) are
not profile. :class:`UserEncoder` maps a user to the mean embedding of its tokens plus a
linear map of its numeric columns; users without a profile, users added after training and
raw histories get the zero vector, so the interest is then the sequence's alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from evorec.data.dataset import USER_IDX, Dataset
from evorec.data.schema import USER
from evorec.errors import ConfigError
from evorec.features.items import attribute_tokens, checked_array, numeric_matrix, split_columns

NOT_PROFILE = (USER, USER_IDX, "friends")


@dataclass
class UserFeatures:
    """Profile of each of ``n_users`` users, row = internal user index: ``tokens``
    ``[n_users, width]`` categorical token ids + 1 (0 = none), ``numeric`` z-scored float
    columns (missing = 0) or None."""

    tokens: np.ndarray
    n_tokens: int
    numeric: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.tokens)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"tokens": self.tokens, "n_tokens": self.n_tokens}
        if self.numeric is not None:
            state["numeric"] = self.numeric
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UserFeatures:
        """The profiles :meth:`state` returned; ``ValueError`` naming the array that is
        missing or does not fit the others (a saved state comes from a file)."""
        if "tokens" not in state:
            raise ValueError("user features: no 'tokens'")
        tokens = checked_array(state["tokens"], "user features 'tokens'", "iu", 2)
        n_tokens = state.get("n_tokens")
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
            raise ValueError(f"user features 'n_tokens': {n_tokens!r} is no count")
        if tokens.size and (tokens.min() < 0 or tokens.max() > n_tokens):
            raise ValueError(f"user features 'tokens': ids outside [0, {n_tokens}]")
        numeric = state.get("numeric")
        if numeric is not None:
            numeric = checked_array(numeric, "user features 'numeric'", "f", 2)
            if len(numeric) != len(tokens):
                raise ValueError(
                    f"user features 'numeric': {len(numeric)} rows for {len(tokens)} users"
                )
        return cls(tokens, n_tokens, numeric)


def profile_columns(dataset: Dataset) -> dict[str, list[str]]:
    """The user-table columns that are categorical and numeric profile attributes."""
    if dataset.users is None:
        return {"categorical": [], "numeric": []}
    return split_columns(dataset.users.schema, NOT_PROFILE)


def build_user_features(dataset: Dataset) -> UserFeatures:
    """The profile of every user of ``dataset``; :class:`ConfigError` without one."""
    columns = profile_columns(dataset)
    users = dataset.users
    if users is None or not (columns["categorical"] or columns["numeric"]):
        raise ConfigError(
            f"user_features needs a user table with profile columns (e.g. age, gender, "
            f"occupation); dataset '{dataset.name}' has none"
        )
    n = dataset.n_users
    tokens, n_tokens = np.zeros((n, 0), dtype=np.int64), 0
    if columns["categorical"]:
        offsets, values, n_tokens = attribute_tokens(users, columns["categorical"], n, USER_IDX)
        lengths = np.diff(offsets)
        tokens = np.zeros((n, int(lengths.max(initial=0))), dtype=np.int64)
        position = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
        tokens[np.repeat(np.arange(n), lengths), position] = values + 1
    numeric = numeric_matrix(users, columns["numeric"], n, USER_IDX) if columns["numeric"] else None
    return UserFeatures(tokens, n_tokens, numeric)


class UserEncoder(nn.Module):
    """Internal user indices -> ``[batch, dim]`` profile vectors (zero for index -1, for
    users beyond the table and for users without a profile)."""

    def __init__(self, features: UserFeatures, dim: int) -> None:
        super().__init__()
        self.n_users = features.n_users
        # row 0: no profile; user u is row u + 1. Side data, not part of the state dict.
        tokens = np.vstack([np.zeros((1, features.tokens.shape[1]), np.int64), features.tokens])
        self.register_buffer("tokens", torch.from_numpy(tokens), persistent=False)
        self.token_embedding = nn.Embedding(features.n_tokens + 1, dim, padding_idx=0)
        nn.init.normal_(self.token_embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.token_embedding.weight[0].zero_()
        self.numeric: nn.Linear | None = None
        if features.numeric is not None:
            numeric = np.vstack([np.zeros((1, features.numeric.shape[1]), np.float32),
                                 features.numeric])  # fmt: skip
            self.register_buffer("numeric_values", torch.from_numpy(numeric), persistent=False)
            self.numeric = nn.Linear(numeric.shape[1], dim, bias=False)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        known = (users >= 0) & (users < self.n_users)
        rows = torch.where(known, users + 1, 0)
        tokens = self.tokens[rows]
        count = (tokens > 0).sum(-1, keepdim=True).clamp(min=1)
        out = self.token_embedding(tokens).sum(-2) / count
        if self.numeric is not None:
            out = out + self.numeric(self.numeric_values[rows])
        return out
