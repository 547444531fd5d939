"""Ranking metrics computed from the 0-based ranks of each user's target items."""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (5, 10, 20)


def ranking_metrics(
    target_ranks: list[np.ndarray], ks: tuple[int, ...] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Per-user metric values from each user's target ranks (0 = top of the list).

    HR@K: any target in the top K. NDCG@K: binary-relevance DCG over the targets in the top K
    divided by the ideal DCG. MRR@K: reciprocal rank of the first target in the top K.
    Recall@K: fraction of the targets in the top K.
    """
    n = len(target_ranks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hr, ndcg, mrr, recall = (np.zeros(n) for _ in range(4))
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        for row, ranks in enumerate(target_ranks):
            if len(ranks) == 0:
                continue
            top = ranks[ranks < k]
            if len(top):
                hr[row] = 1.0
                mrr[row] = 1.0 / (top.min() + 1)
                ideal = discounts[: min(len(ranks), k)].sum()
                ndcg[row] = discounts[top].sum() / ideal
                recall[row] = len(top) / len(ranks)
        out[f"HR@{k}"], out[f"NDCG@{k}"], out[f"MRR@{k}"] = hr, ndcg, mrr
        out[f"Recall@{k}"] = recall
    return out
