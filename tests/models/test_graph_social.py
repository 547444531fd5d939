"""Graph, social and multi-task models: propagation, social edges, next-purchase protocol,
save/load, and small real-data runs against MostPopular."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from evorec import load_model
from evorec.data.dataset import Dataset
from evorec.data.formats import read_events
from evorec.data.histories import Histories
from evorec.data.load import from_frame, load_dataset
from evorec.data.social import social_edges, without_social
from evorec.data.split import leave_one_out, next_purchase_split
from evorec.errors import DataError
from evorec.evaluation.evaluator import evaluate
from evorec.models import LightGCN, MostPopular, MultiTask, SocialSASRec
from evorec.models.graph import bipartite_adjacency, row_normalized

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- graph operators ---------------------------------------------------------------------


def test_bipartite_adjacency_matches_hand_computed():
    # users 0: items {0, 1}; user 1: item {1} (given twice: one edge)
    adjacency = bipartite_adjacency(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2, 2)
    # nodes u0 u1 i0 i1; degrees 2 1 1 2; weight 1/sqrt(d_u d_i)
    s2 = 1 / np.sqrt(2)
    expected = np.array(
        [[0, 0, s2, 0.5], [0, 0, 0, s2], [s2, 0, 0, 0], [0.5, s2, 0, 0]], dtype=np.float32
    )
    np.testing.assert_allclose(adjacency.to_dense().numpy(), expected, rtol=1e-6)


def test_row_normalized_is_neighbour_mean():
    matrix = row_normalized(np.array([0, 0, 2]), np.array([1, 2, 0]), (3, 3)).to_dense()
    np.testing.assert_allclose(matrix.numpy(), [[0, 0.5, 0.5], [0, 0, 0], [1, 0, 0]])


# -- readers with social edges -----------------------------------------------------------


def test_ciao_reader_parses_float_notation_and_trust(tmp_path):
    rows = [(1, 10, 3, 5, 1, 1298876400), (1, 11, 3, 4, 2, 1288940400), (2, 10, 3, 2, 0, 1e9)]
    (tmp_path / "rating.txt").write_text(
        "".join("".join(f"  {v:.7e}" for v in row) + "\n" for row in rows)
    )
    (tmp_path / "trust.txt").write_text("  1.0000000e+000  2.0000000e+000\n  2.0e+000 2.0e+000\n")
    raw = read_events(tmp_path)
    assert raw.events["user_id"].to_list() == [1, 1, 2]
    assert raw.events["item_id"].to_list() == [10, 11, 10]
    assert raw.events["timestamp"].to_list() == [1298876400, 1288940400, 1000000000]
    assert raw.events["value"].to_list() == [5.0, 4.0, 2.0]
    # the self-loop 2 -> 2 is dropped
    assert raw.users.to_dicts() == [{"user_id": 1, "friends": [2]}]


def test_ciao_reader_names_the_bad_line(tmp_path):
    (tmp_path / "rating.txt").write_text("1 2 3 4 5 6\n1 x 3 4 5 6\n")
    (tmp_path / "trust.txt").write_text("1 2\n")
    with pytest.raises(DataError, match=r"rating.txt:2, field .item.: missing item_id"):
        read_events(tmp_path, on_bad_rows="error")


def test_lastfm_orders_artists_by_listening_count(tmp_path):
    (tmp_path / "user_artists.dat").write_text(
        "userID\tartistID\tweight\n2\t51\t300\n2\t52\t100\n2\t53\t200\n"
    )
    (tmp_path / "user_friends.dat").write_text("userID\tfriendID\n2\t3\n")
    raw = read_events(tmp_path)
    ordered = raw.events.sort("user_id", "timestamp")
    assert ordered["item_id"].to_list() == [52, 53, 51]
    assert raw.has_time is False


@pytest.fixture(scope="module")
def ciao(datasets_dir):
    return load_dataset(datasets_dir / "ciao")


def test_social_edges_survive_preprocessing_and_save_load(ciao, tmp_path):
    trusters, trustees = social_edges(ciao)
    assert len(trusters) > 1000
    assert trusters.max() < ciao.n_users and trustees.max() < ciao.n_users
    assert not np.any(trusters == trustees)
    ciao.save(tmp_path / "d")

    again = social_edges(Dataset.load(tmp_path / "d"))
    np.testing.assert_array_equal(again[0], trusters)
    np.testing.assert_array_equal(again[1], trustees)
    assert len(social_edges(without_social(ciao))[0]) == 0


def test_histories_carry_their_users(ciao):
    split = leave_one_out(ciao)
    np.testing.assert_array_equal(split.test.histories.users, split.test.users)
    assert Histories.from_lists([[1, 2]]).users is None


# -- LightGCN ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ciao_split(ciao):
    return leave_one_out(ciao)


@pytest.fixture(scope="module")
def lightgcn(ciao_split):
    return LightGCN(epochs=15, patience=4, dim=32).fit(ciao_split)


def test_lightgcn_fold_in_equals_propagated_training_users(lightgcn, ciao_split):
    network = lightgcn.network
    with torch.no_grad():
        users, _ = network.item_layers()
    train = ciao_split.train.histories
    np.testing.assert_allclose(lightgcn.encode(train), users.mean(0).numpy(), atol=1e-5)
    assert lightgcn.item_vectors().shape == (ciao_split.full.n_items, 32)


def test_lightgcn_beats_most_popular_and_round_trips(lightgcn, ciao_split, tmp_path):
    pop = evaluate(MostPopular().fit(ciao_split), ciao_split.test).metrics["NDCG@10"]
    ndcg = evaluate(lightgcn, ciao_split.test).metrics["NDCG@10"]
    assert ndcg > pop
    loaded = load_model(lightgcn.save(tmp_path / "m"))
    hist = ciao_split.test.histories
    torch.testing.assert_close(loaded.score(hist), lightgcn.score(hist))


# -- social ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def social(ciao_split):
    return SocialSASRec(epochs=8, patience=3, dim=32, max_len=20).fit(ciao_split)


def test_social_edges_change_interest_vectors(social, ciao_split):
    hist = ciao_split.test.histories
    with_users = social.encode(hist)
    anonymous = social.encode(Histories(hist.offsets, hist.items, hist.timestamps))
    has_friends = np.bincount(social.graph.trusters, minlength=ciao_split.full.n_users) > 0
    friends = has_friends[ciao_split.test.users]
    changed = np.abs(with_users - anonymous).max(1) > 1e-6
    assert changed[friends].all()
    assert not changed[~friends].any()


def test_social_without_edges_is_the_sequence_model(ciao_split):
    model = SocialSASRec(epochs=2, dim=16, max_len=10).fit(
        leave_one_out(without_social(ciao_split.full))
    )
    hist = ciao_split.test.histories
    anonymous = Histories(hist.offsets, hist.items, hist.timestamps)
    np.testing.assert_array_equal(model.encode(hist), model.encode(anonymous))
    off = SocialSASRec(epochs=2, dim=16, max_len=10, use_social=False).fit(ciao_split)
    np.testing.assert_array_equal(off.encode(hist), off.encode(anonymous))


def test_social_round_trips(social, ciao_split, tmp_path):
    loaded = load_model(social.save(tmp_path / "m"))
    hist = ciao_split.test.histories
    torch.testing.assert_close(loaded.score(hist), social.score(hist))
    users = ciao_split.full.user_ids.head(3).to_list()
    np.testing.assert_allclose(loaded.user_vectors(users), social.user_vectors(users))


def test_social_beats_most_popular_on_lastfm(datasets_dir):
    # Last.fm friends share much of their taste (see docs/benchmarks.md)
    split = leave_one_out(load_dataset(datasets_dir / "lastfm-hetrec2011"))
    model = SocialSASRec(epochs=6, dim=32, max_len=20, valid_users=300).fit(split)
    pop = evaluate(MostPopular().fit(split), split.test).metrics["NDCG@10"]
    assert evaluate(model, split.test).metrics["NDCG@10"] > pop


# -- next purchase, multi-task -----------------------------------------------------------


def _shop() -> pl.DataFrame:
    # user a: pv 1, buy 2, pv 3, buy 4, pv 5; user b: pv 1, buy 1; user c: no purchase
    rows = [
        ("a", 1, "pv"),
        ("a", 2, "buy"),
        ("a", 3, "pv"),
        ("a", 4, "buy"),
        ("a", 5, "pv"),
        ("b", 1, "pv"),
        ("b", 1, "buy"),
        ("c", 3, "pv"),
        ("c", 5, "pv"),
    ]
    return pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "item": [r[1] for r in rows],
            "behavior": [r[2] for r in rows],
            "t": list(range(len(rows))),
        }
    )


def test_next_purchase_split_by_hand():
    data = from_frame(
        _shop(),
        user="user",
        item="item",
        timestamp="t",
        behavior="behavior",
        preprocess_config={"min_user_events": 1, "min_item_events": 1},
    )
    split = next_purchase_split(data)
    items = data.item_ids.to_list()
    users = data.user_ids.to_list()

    def decode(hist: Histories) -> list[list[int]]:
        return [[items[i] for i in row] for row in hist.to_lists()]

    assert [users[u] for u in split.test.users] == ["a", "b"]
    assert decode(split.test.histories) == [[1, 2, 3], [1]]
    assert decode(split.test.targets) == [[4], [1]]
    assert [users[u] for u in split.valid.users] == ["a"]
    assert decode(split.valid.histories) == [[1]]
    assert decode(split.valid.targets) == [[2]]
    # training: a before its validation purchase, b before its purchase, all of c
    assert decode(split.train.histories) == [[1], [1], [3, 5]]
    with pytest.raises(DataError, match="behavior"):
        next_purchase_split(data, behavior="order")


@pytest.fixture(scope="module")
def taobao_split(datasets_dir):
    data = load_dataset(
        datasets_dir / "taobao-behavior-sample" / "UserBehavior_head84k.csv",
        preprocess_config={"min_user_events": 2, "min_item_events": 2},
    )
    return next_purchase_split(data)


def test_multitask_heads_and_next_purchase_beats_most_popular(taobao_split, tmp_path):
    model = MultiTask(epochs=8, patience=3, dim=32, max_len=30).fit(taobao_split)
    network = model.network
    items, features, _ = model.padded_batch(
        taobao_split.test.histories.take(np.arange(4)), 30, torch.device("cpu")
    )
    with torch.no_grad():
        hidden = network.trunk(items, features)
        heads = {task: tower(hidden) for task, tower in network.towers.items()}
        served = network(items, features)
    assert set(heads) == {"item", "purchase"} and served.shape == hidden.shape
    torch.testing.assert_close(served, heads["purchase"])
    assert not torch.allclose(heads["item"], heads["purchase"])
    test = taobao_split.test
    pop = evaluate(MostPopular().fit(taobao_split), test, filter_seen=False).metrics["HR@10"]
    assert evaluate(model, test, filter_seen=False).metrics["HR@10"] > pop
    loaded = load_model(model.save(tmp_path / "m"))
    torch.testing.assert_close(loaded.score(test.histories), model.score(test.histories))


def test_multitask_reads_item_content_like_the_other_sequence_models(taobao_split, tmp_path):
    model = MultiTask(
        epochs=1, dim=16, max_len=20, item_features=["id", "attributes"], valid_users=50
    ).fit(taobao_split)
    assert model.network.item_encoder is not None
    loaded = load_model(model.save(tmp_path / "m"))
    assert loaded.network.item_encoder is not None
    histories = taobao_split.test.histories.take(np.arange(8))
    torch.testing.assert_close(loaded.score(histories), model.score(histories))
