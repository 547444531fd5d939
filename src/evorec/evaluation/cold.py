"""Metrics of the cold-item protocol (the split is ``evorec.data.split.cold_items``): the
cold items ranked over the full catalogue for the users who go on to take them, Recall/NDCG@K
with the expectation of a random ranking beside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evorec.data.split import ColdItemSplit
from evorec.evaluation.evaluator import EvalResult, evaluate
from evorec.evaluation.metrics import DEFAULT_KS

if TYPE_CHECKING:
    from evorec.models.base import Recommender


def evaluate_cold(
    model: Recommender, cold: ColdItemSplit, *, ks: tuple[int, ...] = DEFAULT_KS
) -> EvalResult:
    """Full-ranking metrics of ``model`` on the cold items (Recall@K counts each cold
    target of a user), with the expected Recall@10 of a random ranking beside them."""
    result = evaluate(model, cold.test, ks=ks)
    recall = {f"Recall@{k}" for k in ks}
    if not recall <= result.metrics.keys():  # one target per user: recall is HR
        result.metrics.update({f"Recall@{k}": result.metrics[f"HR@{k}"] for k in ks})
    result.metrics["random Recall@10"] = random_recall(cold, 10, model.n_items)
    return result


def random_recall(cold: ColdItemSplit, k: int, n_items: int) -> float:
    """Expected Recall@``k`` of a uniformly random ranking: ``k`` over the candidates left
    after the history is filtered."""
    candidates = n_items - cold.test.histories.lengths if cold.test.filter_seen else n_items
    return float(np.mean(np.minimum(k / candidates, 1.0)))
