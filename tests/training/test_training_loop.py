"""The one training loop: every model trained in epochs gets checkpoints and resume, and
the multi-task model takes every training setting it accepts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from evorec.data.dataset import Dataset
from evorec.data.load import from_frame
from evorec.data.split import Split, leave_one_out
from evorec.errors import ConfigError
from evorec.models import LightGCN, MultiTask, Recommender, SASRec
from evorec.training.loop import load_checkpoint
from evorec.training.trainer import SequenceTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"dim": 8, "max_len": 8, "batch_size": 16, "device": "cpu", "epochs": 2}
BEHAVIORS = ["view", "cart", "buy"]
SPARSE = {**TINY, "loss": "sampled_softmax", "n_negatives": 8, "sparse_items": True}


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": [], "behavior": []}
    for user in range(60):
        for step in range(8):
            rows["user_id"].append(user)
            rows["item_id"].append(int(rng.integers(30)))
            rows["timestamp"].append(1000 * user + step)
            rows["behavior"].append(BEHAVIORS[int(rng.integers(3))])
    loose = {"min_user_events": 1, "min_item_events": 1}
    return from_frame(pl.DataFrame(rows), behavior="behavior", preprocess_config=loose)


@pytest.fixture(scope="module")
def split(dataset: Dataset) -> Split:
    return leave_one_out(dataset)


def losses(model: Recommender) -> list[float]:
    return [epoch["loss"] for epoch in model.fit_info["history"]]


def test_multitask_sampled_softmax_changes_the_loss(split: Split) -> None:
    item_tower = {**TINY, "purchase_weight": 0.0}
    full = MultiTask(item_tower).fit(split)
    sampled = MultiTask(item_tower, loss="sampled_softmax", n_negatives=4).fit(split)
    # the target among 4 sampled negatives starts near log(5), the full softmax near log(30)
    assert losses(full)[0] > math.log(20)
    assert losses(sampled)[0] < math.log(10)


def test_multitask_validates_on_valid_users(split: Split) -> None:
    every = MultiTask(TINY).fit(split)
    few = MultiTask(TINY, valid_users=5).fit(split)
    assert losses(every) == losses(few)  # the same training
    ndcg = [epoch["NDCG@10"] for epoch in few.fit_info["history"]]
    assert ndcg != [epoch["NDCG@10"] for epoch in every.fit_info["history"]]


def adam_steps(trainer: SequenceTrainer) -> int:
    param = next(trainer.network.parameters())
    return int(trainer.optimizer.state[param]["step"])


@pytest.mark.parametrize("accumulate", [1, 3])
def test_multitask_accumulates_gradients(dataset: Dataset, accumulate: int) -> None:
    model = MultiTask({**TINY, "accumulate": accumulate})
    model.n_behaviors = len(dataset.behaviors)
    model.prepare(dataset, progress=False)
    trainer = SequenceTrainer(model, dataset, None)
    n_batches = len(trainer.batches())
    trainer.run()
    assert adam_steps(trainer) == TINY["epochs"] * math.ceil(n_batches / accumulate)


def test_multitask_compiles_its_trunk_and_asks_for_amp(dataset: Dataset) -> None:
    model = MultiTask({**TINY, "compile": True, "amp": True})
    model.n_behaviors = len(dataset.behaviors)
    model.prepare(dataset, progress=False)
    trainer = SequenceTrainer(model, dataset, None)
    assert trainer.forward is not model.network.trunk  # type: ignore[union-attr]
    assert getattr(trainer.forward, "_torchdynamo_orig_callable", None) is not None
    # bf16 autocast where the device has it, as for every sequence model
    assert trainer.settings.amp is False  # on the CPU
    plain = MultiTask(TINY)
    plain.n_behaviors = len(dataset.behaviors)
    plain.prepare(dataset, progress=False)
    assert SequenceTrainer(plain, dataset, None).forward == plain.network.trunk  # type: ignore[union-attr]


def test_multitask_purchase_head_is_trained(split: Split) -> None:
    both = MultiTask(TINY).fit(split)
    item_only = MultiTask(TINY, purchase_weight=0.0).fit(split)
    # the purchase head adds its cross-entropy to the item head's
    assert losses(both)[0] > losses(item_only)[0]


@pytest.mark.parametrize(
    ("model_class", "settings"),
    [
        (MultiTask, TINY),
        (LightGCN, {"dim": 8, "epochs": 2, "batch_size": 64}),
        (SASRec, TINY),
        (SASRec, SPARSE),
    ],
)
def test_checkpoint_and_resume_give_the_uninterrupted_run(
    split: Split, tmp_path: Path, model_class: type[Recommender], settings: dict
) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    model_class({**settings, "epochs": 2}).fit(split, checkpoint=checkpoint)
    assert load_checkpoint(checkpoint)["epoch"] == 2
    resumed = model_class({**settings, "epochs": 3}).fit(split, checkpoint=checkpoint, resume=True)
    assert load_checkpoint(checkpoint)["epoch"] == 3
    straight = model_class({**settings, "epochs": 3}).fit(split)
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-6)
    np.testing.assert_allclose(resumed.item_vectors(), straight.item_vectors(), rtol=1e-5)


def test_lightgcn_losses_average_over_interactions(split: Split) -> None:
    model = LightGCN(dim=8, epochs=1).fit(split)
    (epoch,) = model.fit_info["history"]
    interactions = len(model.network.users)  # type: ignore[union-attr]
    assert epoch["positions"] == interactions == model.fit_info["train_sequences"]
    assert torch.isfinite(torch.tensor(epoch["loss"]))


def test_sparse_items_update_only_the_rows_a_step_touches() -> None:
    rng = np.random.default_rng(0)
    events = pl.DataFrame(
        {"user_id": np.repeat(np.arange(40), 8), "item_id": rng.integers(2000, size=320)}
    )
    loose = {"min_user_events": 1, "min_item_events": 1}
    dataset = from_frame(events, preprocess_config=loose)
    model = SASRec({**SPARSE, "epochs": 1, "dropout": 0.0})
    model.prepare(dataset, False)
    trainer = SequenceTrainer(model, dataset, None)
    table = model.fitted_network().item_embedding.weight
    before = table.detach().clone()
    rows = trainer.batches()[0]
    loss, _ = trainer.loss(rows)
    loss.backward()
    assert table.grad is not None and table.grad.is_sparse
    touched = set(table.grad.coalesce().indices()[0].tolist())
    trainer.optimizer.step()
    changed = set(torch.nonzero((table.detach() != before).any(1)).flatten().tolist())
    assert changed and changed <= touched
    assert len(changed) < (len(table) - 1) / 2  # rows no batch item or negative reached stay


def test_sparse_items_train_like_the_dense_table(split: Split) -> None:
    dense = SASRec({**SPARSE, "sparse_items": False, "epochs": 8}).fit(split)
    sparse = SASRec({**SPARSE, "epochs": 8}).fit(split)
    assert losses(sparse)[-1] < losses(sparse)[0]
    assert losses(sparse)[-1] == pytest.approx(losses(dense)[-1], rel=0.1)


@pytest.mark.parametrize("change", [{"loss": "softmax"}, {"item_features": ["id", "text"]}])
def test_sparse_items_need_sampled_negatives_and_id_rows(change: dict) -> None:
    with pytest.raises(ConfigError, match="sparse_items needs"):
        SASRec({**SPARSE, **change})
