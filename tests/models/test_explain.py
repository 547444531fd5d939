"""Explanations: occlusion through the contract, the attention view, the CLI.

The data plants a rule: whenever a user takes item ``A``, the next event is item ``B``. A
model that learns it recommends ``B`` after a history ending in ``A``, and the explanation
must name that ``A`` as the event that drove it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.load import from_frame
from evorec.models import EASE, MODELS, SASRec, SequentialRecommender
from evorec.models.explain import (
    attention_blocks,
    attention_weights,
    block_attention,
    block_weights,
    leave_one_out,
    occlude,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

A, B = "A", "B"
FILLERS = [f"f{n}" for n in range(30)]
LOOSE = {"min_user_events": 1, "min_item_events": 1}
TINY = {"dim": 16, "max_len": 8, "batch_size": 32, "device": "cpu", "lr": 0.01}
START = 1_700_000_000


def planted_frame(n_users: int = 300, seed: int = 0) -> tuple[dict[str, list], pl.DataFrame]:
    """Random filler items; in half of the histories ``A`` appears once, followed by ``B``."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": []}
    for user in range(n_users):
        items = [FILLERS[i] for i in rng.integers(0, len(FILLERS), int(rng.integers(6, 12)))]
        if user % 2 == 0:
            at = int(rng.integers(0, len(items) - 1))
            items[at : at + 2] = [A, B]
        rows["user_id"] += [user] * len(items)
        rows["item_id"] += items
        rows["timestamp"] += (START + 3600 * np.cumsum(rng.integers(1, 48, len(items)))).tolist()
    items = pl.DataFrame(
        {
            "item_id": [A, B, *FILLERS],
            "genre": ["shared", "shared", *(["other"] * len(FILLERS))],
        }
    )
    return rows, items


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rows, items = planted_frame()
    return from_frame(pl.DataFrame(rows), items=items, preprocess_config=LOOSE)


@pytest.fixture(scope="module")
def sasrec(dataset: Dataset) -> SASRec:
    torch.set_num_threads(1)
    return SASRec({**TINY, "epochs": 30, "dropout": 0.1}).fit(dataset)


PLANTED = ["f1", "f7", "f3", "f12", A]  # B must follow


@pytest.mark.parametrize("kind", ["sasrec", "ease"])
def test_occlusion_matches_one_encode_per_event(kind, dataset, sasrec):
    model = sasrec if kind == "sasrec" else EASE().fit(dataset)
    history = dataset.histories.take([4])
    occlusion = occlude(model, history)
    vectors = model.item_vectors()
    target = [int(dataset.encode_items([B])[0])]
    full, changes = occlusion.score_changes(vectors[target])
    whole = model.encode(history)[0] @ vectors[target[0]]
    assert full[0] == pytest.approx(whole, rel=1e-5, abs=1e-6)
    events = history[0].tolist()
    times = history.timestamps.tolist()
    for row, position in enumerate(occlusion.positions):
        kept = [j for j in range(len(events)) if j != position]
        alone = Histories.from_lists([[events[j] for j in kept]], [[times[j] for j in kept]])
        alone.users = history.users
        without = model.encode(alone)[0] @ vectors[target[0]]
        assert changes[row, 0] == pytest.approx(whole - without, rel=1e-4, abs=1e-5)


def test_leave_one_out_keeps_features_aligned(dataset):
    history = dataset.histories.take([2, 3]).take([1])  # a row not at offset 0
    rows = leave_one_out(history, np.array([0, 2, -1]))
    assert rows.lengths.tolist() == [len(history[0]) - 1] * 2 + [len(history[0])]
    assert rows[0].tolist() == history[0][1:].tolist()
    full_times = history.timestamps[history.offsets[0] : history.offsets[1]]
    assert rows.timestamps[: rows.offsets[1]].tolist() == full_times[1:].tolist()
    assert rows.users.tolist() == [3, 3, 3]


def test_recent_bounds_the_occluded_events(dataset, sasrec):
    history = dataset.histories.take([0])
    occlusion = occlude(sasrec, history, recent=3)
    n = len(history[0])
    assert occlusion.positions.tolist() == [n - 3, n - 2, n - 1]


@pytest.mark.parametrize("kind", ["sasrec", "ease"])
def test_the_planted_event_explains_the_recommendation_first(kind, dataset, sasrec):
    model = sasrec if kind == "sasrec" else EASE().fit(dataset)
    explanation = model.explain(history=PLANTED, top=3)
    assert explanation.item_id == B
    first = explanation.events[0]
    assert first.item_id == A and first.position == len(PLANTED) - 1
    assert first.score_change > 0
    assert [e.score_change for e in explanation.events] == sorted(
        (e.score_change for e in explanation.events), reverse=True
    )
    assert first.shared_attributes == ("genre=shared",)
    assert explanation.events[1].shared_attributes == ()


def test_explain_for_a_known_user_gives_original_ids_and_times(dataset, sasrec):
    user = dataset.user_ids[10]
    explanation = sasrec.explain(user, top=4)
    history = dataset.histories.take(dataset.encode_users([user]))
    stored = dict(zip(history[0].tolist(), history.timestamps.tolist(), strict=False))
    assert explanation.user_id == user and len(explanation.events) == 4
    for event in explanation.events:
        item = int(dataset.encode_items([event.item_id])[0])
        assert event.item_id == dataset.item_ids[item]
        assert event.timestamp == history.timestamps[event.position]
        assert item in stored
    assert explanation.item_id == sasrec.recommend([user], k=1)["item_id"][0]
    other = sasrec.explain(user, item=B, top=2)
    assert other.item_id == B
    assert json.loads(json.dumps(other.to_dict()))["events"][0]["item_id"] in dataset.item_ids


def test_explain_refuses_what_it_cannot_explain(dataset, sasrec):
    from evorec.errors import EvorecError, UnknownIdError

    with pytest.raises(UnknownIdError, match="unknown user"):
        sasrec.explain("nobody")
    with pytest.raises(UnknownIdError, match="unknown item"):
        sasrec.explain(history=PLANTED, item="no-such-item")
    with pytest.raises(EvorecError, match="nothing to explain"):
        sasrec.explain(history=[])


@pytest.fixture(scope="module")
def transformers(dataset: Dataset) -> dict[str, SequentialRecommender]:
    torch.set_num_threads(1)
    return {
        name: MODELS[name]({**TINY, "epochs": 1, "heads": 2}).fit(dataset)
        for name in ("sasrec", "bert4rec", "tisasrec")
    }


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "tisasrec"])
def test_attention_weights_are_a_distribution_and_leave_scores_unchanged(
    name, transformers, dataset
):
    model = transformers[name]
    long = dataset.histories.take(np.flatnonzero(dataset.histories.lengths > TINY["max_len"]))
    histories = dataset.histories.take([0, 1, 2])
    before = model.score(histories)
    for row in (histories.take([0]), long.take([0])):
        for how in ("rollout", "last"):
            weights = attention_weights(model, row, how)
            assert weights.shape == (len(row[0]),)
            assert weights.sum() == pytest.approx(1.0)
            assert (weights >= 0).all()
    # the oldest events of a long history lie outside what the model reads
    assert (attention_weights(model, long.take([0]))[: -TINY["max_len"]] == 0).all()
    assert torch.equal(model.score(histories), before)
    hidden, maps, items, read = block_attention(model, histories)
    network = model.fitted_network()
    network.eval()
    with torch.inference_mode():
        assert torch.equal(
            hidden, network(items, model.inference_batch(histories, items.device)[1])
        )
    assert len(maps) == len(network.blocks)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "tisasrec"])
def test_recomputed_weights_are_the_ones_the_block_applies(name, transformers, dataset):
    """The block's output rebuilt from the recomputed weights equals its real output."""
    model = transformers[name]
    network = model.fitted_network()
    network.eval()
    seen: list[tuple] = []
    handle = network.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args))
    histories = dataset.histories.take([0, 5, 9])
    with torch.inference_mode():
        items, features, _ = model.inference_batch(histories, torch.device("cpu"))
        network(items, features)
    handle.remove()
    x, mask = seen[0]
    block = network.blocks[0]
    with torch.inference_mode():
        weights = block_weights(block, x, mask)
        batch, length, dim = x.shape
        _, _, v = (
            block.qkv(block.attn_norm(x))
            .view(batch, length, 3, block.heads, dim // block.heads)
            .permute(2, 0, 3, 1, 4)
        )
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
        h = x + block.out(attended)
        rebuilt = h + block.ffn(block.ffn_norm(h))
        torch.testing.assert_close(rebuilt, block(x, mask), rtol=1e-4, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(()))


def test_models_without_attention_explain_by_occlusion_alone(dataset):
    model = EASE().fit(dataset)
    assert attention_blocks(model) is None
    assert all(e.attention is None for e in model.explain(history=PLANTED).events)


def test_explain_in_the_transformer_view_names_attention(dataset, sasrec):
    explanation = sasrec.explain(history=PLANTED, top=len(PLANTED))
    shares = [e.attention for e in explanation.events]
    assert all(s is not None for s in shares) and sum(shares) == pytest.approx(1.0)


# -- CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(sasrec: SASRec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sasrec.save(tmp_path_factory.mktemp("explain") / "model")


def test_cli_explains_the_top_recommendation(run, model_dir, dataset):
    user = str(dataset.user_ids[0])
    result = run("explain", "--model-dir", model_dir, "--user", user, "--top", "3")
    assert result.code == 0, result.err
    assert f"user {user}: item" in result.out and "score change" in result.out
    result = run("explain", "--model-dir", model_dir, "--user", user, "--item", B, "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["item_id"] == B
    assert len(body["events"]) == min(10, len(dataset.histories[0]))
    assert {"position", "item_id", "timestamp", "score_change", "attention"} <= set(
        body["events"][0]
    )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--user", "nobody", "unknown user"), ("--item", "no-such-item", "unknown item")],
)
def test_cli_refuses_unknown_ids_in_one_line(run, model_dir, dataset, flag, value, message):
    args = {"--user": str(dataset.user_ids[0]), flag: value}
    result = run("explain", "--model-dir", model_dir, *[x for kv in args.items() for x in kv])
    assert result.code == 1
    assert message in result.err and len(result.err.strip().splitlines()) == 1


# -- service -----------------------------------------------------------------------------


def test_the_api_explains_each_recommendation_with_stored_ids_and_times(
    model_dir, dataset, tmp_path
):
    from fastapi.testclient import TestClient

    from evorec.serving import Service, create_app
    from evorec.store import EventStore

    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        client = TestClient(create_app(Service(model_dir, store)))
        events = [
            {"user_id": "newcomer", "item_id": item, "timestamp": 1000 + 60 * n}
            for n, item in enumerate(PLANTED)
        ]
        assert client.post("/events", json=events).status_code == 201
        url = "/users/newcomer/recommendations"
        body = client.get(url, params={"k": 3, "explain": "true", "explain_top": 2}).json()
        first = body["items"][0]
        assert first["item_id"] == B
        assert first["explained_by"][0] == {
            **first["explained_by"][0],
            "item_id": A,
            "timestamp": 1000 + 60 * (len(PLANTED) - 1),
            "shared_attributes": ["genre=shared"],
        }
        assert all(len(item["explained_by"]) == 2 for item in body["items"])
        posted = {e["item_id"]: e["timestamp"] for e in events}
        for item in body["items"]:
            for event in item["explained_by"]:
                assert posted[event["item_id"]] == event["timestamp"]
        plain = client.get(url, params={"k": 3}).json()
        assert [i["item_id"] for i in plain["items"]] == [i["item_id"] for i in body["items"]]
        assert all(item["explained_by"] is None for item in plain["items"])
        user = str(dataset.user_ids[0])
        known = client.get(f"/users/{user}/recommendations", params={"explain": "true"}).json()
        stored = set(dataset.item_ids.gather(dataset.histories[0]).to_list())
        assert known["items"][0]["explained_by"]
        assert {e["item_id"] for e in known["items"][0]["explained_by"]} <= stored
        raw = {"items": [e["item_id"] for e in events], "timestamps": list(posted.values())}
        raw |= {"k": 3, "explain": True, "explain_top": 2}
        anonymous = client.post("/recommendations", json=raw).json()
        # the same events as the stored history: the same items, explained the same way
        assert [(i["item_id"], i["explained_by"]) for i in anonymous["items"]] == [
            (i["item_id"], i["explained_by"]) for i in body["items"]
        ]
        unexplained = client.post("/recommendations", json={**raw, "explain": False}).json()
        assert all(item["explained_by"] is None for item in unexplained["items"])
        too_many = client.post("/recommendations", json={**raw, "explain_top": 51})
        assert too_many.status_code == 422
    finally:
        store.close()
