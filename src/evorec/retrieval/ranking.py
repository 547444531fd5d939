"""Ranking of full score matrices: the items a row must not be recommended again."""

from __future__ import annotations

import torch

from evorec.data.histories import Histories


def exclude_seen(scores: torch.Tensor, histories: Histories) -> None:
    """Score every item of each row's history ``-inf``, in place."""
    rows, items = torch.from_numpy(histories.rows), torch.from_numpy(histories.items)
    scores[rows.to(scores.device), items.to(scores.device)] = -torch.inf
