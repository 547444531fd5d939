"""Ranking metrics on hand-computed cases and the full-ranking evaluation protocol."""

from __future__ import annotations

from math import log2
from typing import Any

import numpy as np
import polars as pl
import pytest

import evorec.evaluation.evaluator as evaluator_module
from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.schema import RawData, canonical_events
from evorec.data.split import EvalSet
from evorec.errors import NonFiniteError
from evorec.evaluation.evaluator import evaluate, tie_keys
from evorec.evaluation.metrics import ranking_metrics
from evorec.models.base import Recommender


def metrics_of(ranks: list[list[int]], ks: tuple[int, ...]) -> dict[str, list[float]]:
    out = ranking_metrics([np.array(r, dtype=np.int64) for r in ranks], ks)
    return {name: values.tolist() for name, values in out.items()}


# -- ranking_metrics --------------------------------------------------------------------


def test_single_target_ranks():
    m = metrics_of([[0], [3], [12]], ks=(1, 5, 10, 20))
    assert set(m) == {f"{n}@{k}" for n in ("HR", "NDCG", "MRR", "Recall") for k in (1, 5, 10, 20)}
    # rank 0: perfect everywhere
    for k in (1, 5, 10, 20):
        assert [m[f"{n}@{k}"][0] for n in ("HR", "NDCG", "MRR", "Recall")] == [1, 1, 1, 1]
    # rank 3 (4th place): missed at 1, hit at 5+
    assert [m["HR@1"][1], m["NDCG@1"][1], m["MRR@1"][1], m["Recall@1"][1]] == [0, 0, 0, 0]
    for k in (5, 10, 20):
        assert m[f"HR@{k}"][1] == 1
        assert m[f"NDCG@{k}"][1] == pytest.approx(1 / log2(5))
        assert m[f"MRR@{k}"][1] == pytest.approx(1 / 4)
        assert m[f"Recall@{k}"][1] == 1
    # rank 12 (13th place): only inside the top 20
    for k in (1, 5, 10):
        assert m[f"HR@{k}"][2] == m[f"NDCG@{k}"][2] == m[f"MRR@{k}"][2] == 0
    assert m["HR@20"][2] == 1
    assert m["NDCG@20"][2] == pytest.approx(1 / log2(14))
    assert m["MRR@20"][2] == pytest.approx(1 / 13)


def test_rank_just_outside_k():
    m = metrics_of([[5], [4]], ks=(5,))
    assert m["HR@5"] == [0, 1]
    assert m["NDCG@5"][1] == pytest.approx(1 / log2(6))


def test_multiple_targets():
    m = metrics_of([[30, 2, 0], [4, 1], list(range(7))], ks=(1, 3, 5))
    # user 0: targets at ranks 0, 2 and 30
    assert m["HR@5"][0] == 1
    assert m["NDCG@5"][0] == pytest.approx((1 + 1 / log2(4)) / (1 + 1 / log2(3) + 1 / log2(4)))
    assert m["MRR@5"][0] == 1
    assert m["Recall@5"][0] == pytest.approx(2 / 3)
    assert m["NDCG@1"][0] == pytest.approx(1.0)  # ideal DCG@1 is a single hit too
    assert m["Recall@1"][0] == pytest.approx(1 / 3)
    # user 1: targets at ranks 4 and 1
    assert m["HR@3"][1] == 1
    assert m["MRR@3"][1] == pytest.approx(1 / 2)
    assert m["NDCG@3"][1] == pytest.approx((1 / log2(3)) / (1 + 1 / log2(3)))
    assert m["Recall@3"][1] == pytest.approx(1 / 2)
    assert m["HR@1"][1] == 0
    # user 2: 7 targets filling the whole top 5 -> ideal ranking
    assert m["NDCG@5"][2] == pytest.approx(1.0)
    assert m["Recall@5"][2] == pytest.approx(5 / 7)
    assert m["MRR@5"][2] == 1


def test_empty_targets_score_zero():
    m = metrics_of([[], [0]], ks=(5,))
    assert [v[0] for v in m.values()] == [0, 0, 0, 0]
    assert [v[1] for v in m.values()] == [1, 1, 1, 1]
    assert all(len(v) == 0 for v in metrics_of([], ks=(5,)).values())


# -- evaluate ---------------------------------------------------------------------------


class TableModel(Recommender):
    """``score(history)[j] = table[last item, j]`` (all zeros for an empty history).

    Interest vector: one-hot of the last item; item vectors: the columns of ``table``."""

    name = "table"

    def __init__(self, table: np.ndarray, dataset: Dataset) -> None:
        super().__init__()
        self.table = np.asarray(table, dtype=np.float32)
        self.dataset = dataset

    def _fit(self, train: Dataset, valid: Any, progress: bool) -> None:
        pass

    def encode(self, histories: Histories) -> np.ndarray:
        out = np.zeros((len(histories), self.table.shape[0]), dtype=np.float32)
        rows = np.flatnonzero(histories.lengths > 0)
        out[rows, histories.items[histories.offsets[rows + 1] - 1]] = 1.0
        return out

    def item_vectors(self) -> np.ndarray:
        return self.table.T

    def saved_state(self) -> dict[str, Any]:
        return {}

    def load_saved_state(self, state: dict[str, Any]) -> None:
        pass


def catalogue(n_items: int) -> Dataset:
    raw = RawData(
        canonical_events(
            pl.DataFrame(
                {
                    "user_id": [0] * n_items,
                    "item_id": list(range(n_items)),
                    "timestamp": list(range(n_items)),
                }
            )
        )
    )
    ds = preprocess(raw, PreprocessConfig(min_user_events=1, min_item_events=1))
    assert ds.item_ids.to_list() == list(range(n_items))
    return ds


def constant_model(scores: list[float]) -> TableModel:
    """Every non-empty history gets ``scores``; empty ones get all zeros."""
    return TableModel(np.tile(np.array(scores), (len(scores), 1)), catalogue(len(scores)))


def eval_set(histories: list[list[int]], targets: list[list[int]]) -> EvalSet:
    return EvalSet(
        np.arange(len(histories)), Histories.from_lists(histories), Histories.from_lists(targets)
    )


DESC = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # item 0 best ... item 5 worst


def test_score_is_what_the_table_says():
    model = constant_model(DESC)
    scores = model.score(Histories.from_lists([[3], []]))
    assert scores.tolist() == [DESC, [0.0] * 6]


def test_filter_seen_changes_ranks():
    model = constant_model(DESC)
    data = eval_set([[0, 1], [4]], [[2], [0]])
    on = evaluate(model, data, ks=(1, 3), filter_seen=True)
    off = evaluate(model, data, ks=(1, 3), filter_seen=False)
    # on: items 0, 1 removed for user 0 -> target 2 is first; user 1 unaffected (rank 0)
    assert on.per_user["HR@1"].tolist() == [1, 1]
    # off: target 2 is third for user 0
    assert off.per_user["HR@1"].tolist() == [0, 1]
    assert off.per_user["MRR@3"].tolist() == pytest.approx([1 / 3, 1])
    assert off.per_user["NDCG@3"].tolist() == pytest.approx([1 / log2(4), 1])
    assert on.metrics["HR@1"] == 1 and off.metrics["HR@1"] == 0.5
    assert on.filter_seen and not off.filter_seen
    assert on.users == off.users == 2
    # by default the eval set's protocol decides
    assert evaluate(model, data, ks=(1, 3)).per_user["HR@1"].tolist() == [1, 1]
    data.filter_seen = False
    by_protocol = evaluate(model, data, ks=(1, 3))
    assert not by_protocol.filter_seen and by_protocol.per_user["HR@1"].tolist() == [0, 1]


def test_seen_target_cannot_be_hit_when_filtered():
    model = constant_model(DESC)
    data = eval_set([[2, 0]], [[2]])
    on = evaluate(model, data, ks=(1, 3, 10), filter_seen=True)
    # k=10 exceeds the 6-item catalogue: a removed target must still not count as a hit
    assert [on.metrics[f"HR@{k}"] for k in (1, 3, 10)] == [0, 0, 0]
    assert on.metrics["NDCG@10"] == 0 and on.metrics["MRR@10"] == 0
    off = evaluate(model, data, ks=(1, 3, 10), filter_seen=False)
    assert [off.metrics[f"HR@{k}"] for k in (1, 3, 10)] == [0, 1, 1]
    assert off.metrics["MRR@3"] == pytest.approx(1 / 3)


def test_ties_are_neutral():
    """A model that scores every item the same gets the hit rate of a random ranking."""
    n_items, n_users = 40, 4000
    model = constant_model([1.0] * n_items)
    rng = np.random.default_rng(0)
    targets = rng.integers(0, n_items, n_users)
    data = eval_set([[]] * n_users, [[t] for t in targets])
    res = evaluate(model, data, ks=(1, 10), filter_seen=False)
    for k in (1, 10):
        expected = k / n_items
        standard_error = (expected * (1 - expected) / n_users) ** 0.5
        assert abs(res.metrics[f"HR@{k}"] - expected) < 4 * standard_error, k
    # the result does not follow the item index (item indices follow first appearance)
    low = res.per_user["HR@10"][targets < 10].mean()
    assert low < 0.5, low
    # a tied item that was seen is out of the ranking: the target competes with the rest
    seen = evaluate(model, eval_set([list(range(30))] * n_users, [[35]] * n_users), ks=(1,))
    assert abs(seen.metrics["HR@1"] - 1 / 10) < 4 * (0.1 * 0.9 / n_users) ** 0.5


def test_ties_only_among_equal_scores():
    model = constant_model([1.0, 3.0, 3.0, 2.0, 3.0, 0.0])
    data = eval_set([[5]] * 4, [[1], [2], [4], [3]])
    res = evaluate(model, data, ks=(1, 2, 3, 4), filter_seen=False)
    # items 1, 2 and 4 share the top three places; item 3 is always fourth
    assert set(res.per_user["MRR@4"][:3].tolist()) <= {1, 1 / 2, 1 / 3}
    assert res.per_user["MRR@4"][3] == pytest.approx(1 / 4)


def test_non_finite_scores_are_refused():
    for bad in (float("nan"), float("inf"), float("-inf")):
        model = constant_model([1.0, bad, 0.5])
        with pytest.raises(NonFiniteError, match="NaN or infinite"):
            evaluate(model, eval_set([[0]], [[1]]), ks=(1,))


def test_coverage():
    model = constant_model(DESC)
    data = eval_set([[0, 1], [0], [5]], [[2], [3], [4]])
    off = evaluate(model, data, ks=(1,), filter_seen=False, coverage_k=2)
    assert off.metrics["Coverage@2"] == pytest.approx(2 / 6)  # everyone gets {0, 1}
    on = evaluate(model, data, ks=(1,), filter_seen=True, coverage_k=2)
    # tops: {2, 3}, {1, 2}, {0, 1}
    assert on.metrics["Coverage@2"] == pytest.approx(4 / 6)
    assert "Coverage@10" in evaluate(model, data, ks=(1,)).metrics


def test_recall_reported_only_with_multiple_targets():
    model = constant_model(DESC)
    single = evaluate(model, eval_set([[5], [5]], [[0], [1]]), ks=(1,))
    assert "Recall@1" not in single.metrics and "HR@1" in single.metrics
    multi = evaluate(model, eval_set([[5], [5]], [[0, 4], [1]]), ks=(1,))
    assert multi.metrics["Recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert multi.metrics["HR@1"] == pytest.approx(1 / 2)


def test_repeated_target_counts_once():
    """A temporal window may hold the same item twice: binary relevance counts it once."""
    model = constant_model(DESC)
    res = evaluate(model, eval_set([[5], [5]], [[0, 0], [4, 0, 4]]), ks=(1, 5))
    # user 1: distinct targets 0 (rank 0) and 4 (rank 4)
    ndcg = (1 + 1 / log2(6)) / (1 + 1 / log2(3))
    assert res.per_user["NDCG@5"].tolist() == pytest.approx([1.0, ndcg])
    assert res.per_user["Recall@1"].tolist() == pytest.approx([1.0, 1 / 2])
    assert res.per_user["NDCG@1"].tolist() == pytest.approx([1.0, 1.0])
    assert res.metrics["NDCG@5"] <= 1.0


def random_problem(seed: int, n_items: int = 17, n_users: int = 23):
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 4, (n_items, n_items)).astype(np.float32)  # many ties
    hist = [rng.integers(0, n_items, rng.integers(0, 6)).tolist() for _ in range(n_users)]
    targ = [rng.integers(0, n_items, rng.integers(1, 4)).tolist() for _ in range(n_users)]
    return TableModel(table, catalogue(n_items)), hist, targ


def brute_force_ranks(model: TableModel, hist, targ, filter_seen: bool) -> list[np.ndarray]:
    out = []
    for row, (h, t) in enumerate(zip(hist, targ, strict=True)):
        s = [float(x) for x in model.table[h[-1]]] if h else [0.0] * model.table.shape[0]
        if filter_seen:
            for i in h:
                s[i] = float("-inf")
        ranks = []
        for target in dict.fromkeys(t):  # distinct targets
            if s[target] == float("-inf"):
                ranks.append(10**9)  # removed from the ranking
                continue
            keys = tie_keys(row, len(s)).tolist()
            ranks.append(
                sum(
                    1
                    for j, v in enumerate(s)
                    if v > s[target] or (v == s[target] and keys[j] < keys[target])
                )
            )
        out.append(np.array(ranks, dtype=np.int64))
    return out


@pytest.mark.parametrize("filter_seen", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_matches_brute_force(seed, filter_seen):
    model, hist, targ = random_problem(seed)
    ks = (1, 3, 10)
    res = evaluate(model, eval_set(hist, targ), ks=ks, filter_seen=filter_seen)
    expected = ranking_metrics(brute_force_ranks(model, hist, targ, filter_seen), ks)
    assert set(res.per_user) == set(expected)
    for name in expected:
        np.testing.assert_allclose(res.per_user[name], expected[name], err_msg=name)
        assert res.metrics[name] == pytest.approx(float(expected[name].mean()))


@pytest.mark.parametrize("budget", [1, 17, 18, 17 * 5 + 3])
def test_chunking_gives_identical_results(monkeypatch, budget):
    model, hist, targ = random_problem(2)
    data = eval_set(hist, targ)
    for filter_seen in (True, False):
        whole = evaluate(model, data, ks=(1, 5), filter_seen=filter_seen, coverage_k=3)
        monkeypatch.setattr(evaluator_module, "SCORE_BUDGET", budget)
        chunked = evaluate(model, data, ks=(1, 5), filter_seen=filter_seen, coverage_k=3)
        monkeypatch.undo()
        assert chunked.metrics == whole.metrics
        for name, values in whole.per_user.items():
            assert np.array_equal(chunked.per_user[name], values), name
