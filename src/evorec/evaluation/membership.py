"""Membership inference: does a model behave as if it had trained on a user's events?

The attack scores each user by how well the model predicts the user's own events: for
each of the user's last ``events`` events, the model reads the events before it and gives
the event's item a log-probability (``loss``: log-softmax of ``s = i · v`` over every item)
or a rank (``rank``: the share of items scored above it, negated). A model that learned
from a user predicts that user's events better than a stranger's. The attack's AUC
separates two groups of users: about 0.5 when the model cannot tell them apart. Forgetting
worked when the forgotten users' AUC against users the model never saw is about 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from evorec.data.histories import Histories
from evorec.errors import EvorecError, NonFiniteError
from evorec.models.base import Recommender

Signal = Literal["loss", "rank"]
CHUNK = 256  # prefixes scored at once


@dataclass(frozen=True)
class MembershipResult:
    auc: float  # P(a member scores above a non-member), ties counted half
    members: int
    nonmembers: int
    member_mean: float  # mean attack score of each group
    nonmember_mean: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "auc": self.auc,
            "members": self.members,
            "nonmembers": self.nonmembers,
            "member_mean": self.member_mean,
            "nonmember_mean": self.nonmember_mean,
        }


def membership_scores(
    model: Recommender, histories: Histories, events: int = 20, signal: Signal = "loss"
) -> np.ndarray:
    """Per history row, the mean attack score of its last ``events`` events (each read
    after the events before it; a row's first event is never scored). Higher means "more
    likely trained on". Rows with fewer than two events are refused."""
    lengths = histories.lengths
    if (lengths < 2).any():
        row = int(np.argmax(lengths < 2))
        raise EvorecError(f"membership: history row {row} has {lengths[row]} events, need 2")
    scored = np.minimum(lengths - 1, events)
    rows = np.repeat(np.arange(len(histories)), scored)
    nth = np.arange(len(rows)) - np.repeat(np.cumsum(scored) - scored, scored)
    position = lengths[rows] - scored[rows] + nth  # each row's last ``scored`` events
    prefixes = histories.take(rows).slice_each(0, position)
    targets = histories.items[histories.offsets[rows] + position]
    values = np.empty(len(rows), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(rows), CHUNK):
            stop = min(start + CHUNK, len(rows))
            scores = model.score(prefixes.take(np.arange(start, stop))).float()
            if not torch.isfinite(scores).all():
                raise NonFiniteError(f"{model.name}: non-finite scores in the membership attack")
            target = torch.from_numpy(targets[start:stop]).unsqueeze(1)
            own = scores.gather(1, target)
            if signal == "loss":
                value = torch.log_softmax(scores, dim=1).gather(1, target)
            else:
                value = -(scores > own).float().mean(1, keepdim=True)
            values[start:stop] = value.squeeze(1).double().numpy()
    return np.bincount(rows, weights=values, minlength=len(histories)) / scored


def attack_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The AUC of attack scores: the chance that a member's score is above a
    non-member's, ties counted half (the Mann-Whitney U over the product of the sizes)."""
    members, nonmembers = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    if len(members) == 0 or len(nonmembers) == 0:
        raise EvorecError("membership: both groups need at least one user")
    ordered = np.sort(nonmembers)
    below = np.searchsorted(ordered, members, side="left")
    tied = np.searchsorted(ordered, members, side="right") - below
    return float((below + 0.5 * tied).sum() / (len(members) * len(nonmembers)))


def membership_auc(
    model: Recommender,
    members: Histories,
    nonmembers: Histories,
    events: int = 20,
    signal: Signal = "loss",
) -> MembershipResult:
    """The attack's AUC of ``members`` (users the model may have trained on) against
    ``nonmembers`` (users it never saw), each a set of their own histories."""
    inside = membership_scores(model, members, events, signal)
    outside = membership_scores(model, nonmembers, events, signal)
    return MembershipResult(
        attack_auc(inside, outside),
        len(inside),
        len(outside),
        float(inside.mean()),
        float(outside.mean()),
    )
