"""Full-ranking evaluation: every item is a candidate, no sampled negatives. On a large
test split the users can be sampled instead: each sampled user is still ranked against the
full catalogue, and the report gives the sample size and a 95% confidence interval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from evorec.data.histories import Histories
from evorec.data.split import EvalSet
from evorec.errors import ConfigError, NonFiniteError
from evorec.evaluation.metrics import DEFAULT_KS, ranking_metrics
from evorec.retrieval.ranking import exclude_seen

if TYPE_CHECKING:
    from evorec.models.base import Recommender

SCORE_BUDGET = 2**25  # scores held at once (floats): bounds evaluation memory
UNRANKED = np.iinfo(np.int64).max  # rank of a target removed from the ranking
TIE_SEED = 0  # ties are broken in the same random order in every evaluation
Z95 = 1.96  # two-sided 95% quantile of the normal distribution


@dataclass
class EvalResult:
    """``users`` rows evaluated out of ``population``; ``ci95`` the half-width of the 95%
    confidence interval of each per-user-mean metric (0 when every row was evaluated)."""

    metrics: dict[str, float]
    users: int
    filter_seen: bool
    population: int
    ci95: dict[str, float]
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def sampled(self) -> bool:
        return self.users < self.population

    def users_label(self) -> str:
        return users_label(self.users, self.population)

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "population": self.population,
            "filter_seen": self.filter_seen,
            **self.metrics,
            "ci95": self.ci95,
        }


def users_label(users: int, population: int) -> str:
    """``"6040 users"``, or ``"500 of 6040 users (95% CI)"`` for a sample."""
    if users < population:
        return f"{users} of {population} users (95% CI)"
    return f"{users} users"


def sample_rows(population: int, users: int | None, seed: int = 0) -> np.ndarray:
    """Sorted positions of the rows to evaluate: all ``population`` of them, or a uniform
    sample of ``users`` drawn without replacement when that is fewer."""
    if users is None or users >= population:
        return np.arange(population)
    if users < 2:
        raise ConfigError(f"evaluation users={users}: a sample needs at least 2 users")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(population, size=users, replace=False))


def ci_half_width(values: np.ndarray, population: int) -> float:
    """Half-width of the 95% confidence interval of the population mean from the sample
    ``values`` (drawn without replacement): normal approximation with the finite-population
    correction, so it is 0 when the sample is the whole population."""
    n = len(values)
    if n >= population:
        return 0.0
    std_error = float(np.std(values, ddof=1)) / np.sqrt(n)
    return Z95 * std_error * float(np.sqrt((population - n) / (population - 1)))


def check_finite(scores: torch.Tensor, model_name: str) -> None:
    """Refuse scores that are NaN or infinite: a NaN target compares false against every item
    and would rank first, so a diverged model would look perfect."""
    finite = torch.isfinite(scores)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f"{bad:,} of {scores.numel():,} scores of {model_name} are NaN or infinite: the "
            "model diverged (try a lower lr)"
        )


def tie_keys(row: int, n_items: int) -> torch.Tensor:
    """Random tie-break keys of the items for evaluation row ``row``: among items scored the
    same, the lower key ranks first. A function of the row alone, so chunking and the order
    of evaluation never change a result."""
    return torch.rand(n_items, generator=torch.Generator().manual_seed(TIE_SEED + row))


def target_ranks(
    scores: torch.Tensor,
    targets: Histories,
    chunk: int,
    row_ids: np.ndarray | None = None,
) -> list[np.ndarray]:
    """0-based rank of each target among all items. Ties are broken at random
    (:func:`tie_keys` of the row's id in ``row_ids``, by default its position), so a tie
    neither helps nor hurts: a model that scores every item the same gets the hit rate of a
    random ranking. One user's targets share one tie order.

    Targets scored ``-inf`` (removed from the ranking) get :data:`UNRANKED`."""
    rows = targets.rows
    row_ids = np.arange(len(targets)) if row_ids is None else row_ids
    flat_ranks = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        local = torch.from_numpy(rows[part])
        row_scores = scores[local]
        items = torch.from_numpy(targets.items[part])
        own = row_scores.gather(1, items[:, None])
        tied = row_scores == own
        ranks = (row_scores > own).sum(1)
        removed = torch.isneginf(own[:, 0])
        for target in torch.nonzero((tied.sum(1) > 1) & ~removed).flatten().tolist():
            keys = tie_keys(int(row_ids[rows[start + target]]), scores.shape[1])
            ranks[target] += int((tied[target] & (keys < keys[items[target]])).sum())
        # A target scored -inf (filtered out as seen) is not in the ranking at all: it must
        # miss at every K, even at K >= the number of items left.
        ranks[removed] = UNRANKED
        flat_ranks[part] = ranks.numpy()
    return np.split(flat_ranks, targets.offsets[1:-1])


def distinct_targets(targets: Histories) -> Histories:
    """Each row's distinct target items, in order of first occurrence.

    Relevance is binary: an item taken twice in the target window (a temporal split keeps
    repeats) is one relevant item, else NDCG could exceed 1 and recall double-count it."""
    rows = targets.rows
    order = np.lexsort((np.arange(len(rows)), targets.items, rows))
    new_key = np.ones(len(order), dtype=bool)
    new_key[1:] = (np.diff(rows[order]) != 0) | (np.diff(targets.items[order]) != 0)
    keep = np.zeros(len(rows), dtype=bool)
    keep[order[new_key]] = True
    if keep.all():
        return targets
    offsets = np.zeros(len(targets) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=len(targets)), out=offsets[1:])
    return Histories(offsets, targets.items[keep])


def evaluate(
    model: Recommender,
    data: EvalSet,
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    filter_seen: bool | None = None,
    coverage_k: int = 10,
    users: int | None = None,
    seed: int = 0,
) -> EvalResult:
    """Rank the full catalogue for every user of ``data`` and average the metrics.

    With ``filter_seen`` the items in a user's history are removed from the ranking (a target
    the user has already seen can then not be hit); by default as ``data`` says (filtered
    unless the dataset has repeat consumption). Catalogue coverage@``coverage_k`` is the
    share of items that appear in at least one user's top list.

    With ``users`` fewer than the rows of ``data``, only a uniform random sample of that many
    rows (drawn with ``seed``) is evaluated; a sampled row ranks exactly as in the full
    evaluation (its ties are broken by its position in ``data``), and ``ci95`` gives each
    mean's 95% confidence interval. Coverage counts the sampled users' top lists only.
    """
    if filter_seen is None:
        filter_seen = data.filter_seen
    population = len(data)
    row_ids = sample_rows(population, users, seed)
    n_items = model.n_items
    chunk = max(1, SCORE_BUDGET // max(n_items, 1))
    all_ranks: list[np.ndarray] = []
    recommended = np.zeros(n_items, dtype=bool)
    with torch.inference_mode():
        for start in range(0, len(row_ids), chunk):
            rows = row_ids[start : start + chunk]
            hist = data.histories.take(rows)
            scores = model.score(hist).float()
            check_finite(scores, model.name)
            if filter_seen:
                exclude_seen(scores, hist)
            targets = distinct_targets(data.targets.take(rows))
            all_ranks.extend(target_ranks(scores, targets, chunk, rows))
            top = torch.topk(scores, min(coverage_k, n_items), dim=1).indices
            recommended[top.flatten().numpy()] = True
    per_user = ranking_metrics(all_ranks, ks)
    multi_target = any(len(r) > 1 for r in all_ranks)
    metrics = {
        name: float(values.mean())
        for name, values in per_user.items()
        if multi_target or not name.startswith("Recall")
    }
    ci95 = {name: ci_half_width(per_user[name], population) for name in metrics}
    metrics[f"Coverage@{coverage_k}"] = float(recommended.mean())
    return EvalResult(metrics, len(row_ids), filter_seen, population, ci95, per_user)
