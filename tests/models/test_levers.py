"""The accuracy levers of the attention trunk and the sequence objective: RMSNorm, SwiGLU and
gated (LiGR) blocks, the gBCE loss, and learning-rate warm-up and decay. Each is off by
default, and the defaults build the network and the loss exactly as before."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from evorec.data.dataset import Dataset
from evorec.data.load import from_frame
from evorec.models import SASRec
from evorec.models.sasrec import SASRecConfig, SASRecNetwork
from evorec.models.sequential import SequenceTask, lr_factor
from evorec.models.trunks import SelfAttentionBlock, SwiGLU

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sasrec-v0.1.0"
N_ITEMS = 30
TINY = {"dim": 16, "max_len": 8, "batch_size": 16, "device": "cpu", "dropout": 0.0}
LIGR = {"norm": "rms", "ffn": "swiglu", "gated": True}


@pytest.fixture(scope="module")
def cycle() -> Dataset:
    """Users walking the cycle of items ``0 -> 1 -> ... -> 29 -> 0`` from random starts: the
    next item is always the previous one plus one."""
    rng = np.random.default_rng(0)
    rows: dict[str, list[int]] = {"user_id": [], "item_id": [], "timestamp": []}
    for user in range(80):
        start = int(rng.integers(N_ITEMS))
        rows["user_id"] += [user] * 10
        rows["item_id"] += [(start + step) % N_ITEMS for step in range(10)]
        rows["timestamp"] += list(range(10))
    return from_frame(
        pl.DataFrame(rows), preprocess_config={"min_user_events": 1, "min_item_events": 1}
    )


def test_default_block_keeps_the_saved_parameter_names() -> None:
    """The defaults build LayerNorm and a GELU MLP without gates, under the names of a
    model directory saved by evorec 0.1.0 (which tests/test_modeldir.py loads and scores)."""
    state = torch.load(FIXTURE / "state.pt", weights_only=True)
    config = SASRecConfig(**yaml.safe_load((FIXTURE / "config.yaml").read_text()))
    network = SASRecNetwork(int(state["n_items"]), config)
    assert sorted(network.state_dict()) == sorted(state["network"])
    block = network.blocks[0]
    assert isinstance(block.attn_norm, nn.LayerNorm) and block.gates is None
    assert isinstance(block.ffn, nn.Sequential)


def test_ligr_block_shapes_and_causality() -> None:
    torch.manual_seed(0)
    block = SelfAttentionBlock(16, 2, 32, 0.0, norm="rms", ffn="swiglu", gated=True).eval()
    assert isinstance(block.attn_norm, nn.RMSNorm) and isinstance(block.ffn, SwiGLU)
    assert block.gates is not None and len(block.gates) == 2
    x = torch.randn(3, 7, 16)
    out = block(x)
    assert out.shape == x.shape
    changed = x.clone()
    changed[:, 4:] = torch.randn(3, 3, 16)
    assert torch.allclose(block(changed)[:, :4], out[:, :4], atol=1e-6)  # causal
    assert not torch.allclose(block(changed)[:, 4:], out[:, 4:])


def test_swiglu_is_silu_gate_times_linear() -> None:
    torch.manual_seed(0)
    ffn = SwiGLU(8, 12, 0.0)
    x = torch.randn(5, 8)
    a, b = x @ ffn.inner.weight[:12].T + ffn.inner.bias[:12], x @ ffn.inner.weight[12:].T
    b = b + ffn.inner.bias[12:]
    expected = (F.silu(a) * b) @ ffn.outer.weight.T + ffn.outer.bias
    assert torch.allclose(ffn(x), expected, atol=1e-6)


def test_network_options_reach_every_block_and_the_final_norm() -> None:
    network = SASRecNetwork(20, SASRecConfig(dim=8, max_len=6, layers=2, **LIGR))
    assert isinstance(network.norm, nn.RMSNorm)
    assert all(isinstance(block.ffn, SwiGLU) for block in network.blocks)
    assert network(torch.randint(1, 21, (4, 6))).shape == (4, 6, 8)


def test_gbce_matches_its_formula(cycle: Dataset) -> None:
    model = SASRec(TINY, loss="gbce", n_negatives=5, gbce_t=0.5)
    model.prepare(cycle, progress=False)
    task = SequenceTask(model, cycle)
    positive, negative = torch.randn(4, 1), torch.randn(4, 5)
    negative[0, 2] = -torch.inf  # the target drawn as a negative: no term
    alpha = 5 / (cycle.n_items - 1)
    beta = alpha * (0.5 * (1 - 1 / alpha) + 1 / alpha)
    terms = -beta * torch.log(torch.sigmoid(positive[:, 0]))
    terms = terms - torch.log(1 - torch.sigmoid(negative)).sum(1)
    assert torch.allclose(task.gbce(positive, negative), terms.mean(), atol=1e-5)


def test_gbce_with_t_zero_is_binary_cross_entropy(cycle: Dataset) -> None:
    model = SASRec(TINY, loss="gbce", n_negatives=3, gbce_t=0.0)
    model.prepare(cycle, progress=False)
    task = SequenceTask(model, cycle)
    positive, negative = torch.randn(6, 1), torch.randn(6, 3)
    logits = torch.cat([positive, negative], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(1).mean()
    assert torch.allclose(task.gbce(positive, negative), bce, atol=1e-5)


@pytest.mark.parametrize("negatives", ["shared", "per_position"])
def test_sampled_softmax_negatives_shared_or_per_position(cycle: Dataset, negatives: str) -> None:
    """The loss is the cross-entropy of the target against the negatives the generator
    draws: one set for all positions, or n_negatives for each position in turn."""
    model = SASRec(TINY, loss="sampled_softmax", n_negatives=4, negatives=negatives)
    model.prepare(cycle, progress=False)
    task = SequenceTask(model, cycle)
    hidden, target = torch.randn(5, TINY["dim"]), torch.tensor([0, 1, 2, 3, 4])
    state = task.generator.get_state()
    loss = task.output_loss(hidden, target)
    task.generator.set_state(state)
    drawn = torch.multinomial(
        task.negative_probs,
        4 * (5 if negatives == "per_position" else 1),
        True,
        generator=task.generator,
    )
    drawn = drawn.view(5, 4) if negatives == "per_position" else drawn.expand(5, 4)
    table = model.network.item_weights()
    log_q = task.log_q
    positive = (hidden * table[target]).sum(1, keepdim=True) - log_q[target, None]
    negative = torch.einsum("nd,nkd->nk", hidden, table[drawn]) - log_q[drawn]
    negative = negative.masked_fill(drawn == target[:, None], -torch.inf)
    expected = F.cross_entropy(torch.cat([positive, negative], 1), torch.zeros(5, dtype=torch.long))
    assert torch.allclose(loss, expected, atol=1e-5)
    if negatives == "per_position":  # the positions did not all get the same negatives
        assert len({tuple(row.tolist()) for row in drawn}) > 1


def test_lr_factor_warms_up_then_decays() -> None:
    assert lr_factor(0.5, 10, warmup_epochs=2) == pytest.approx(0.25)
    assert lr_factor(5.0, 10, warmup_epochs=2) == 1.0
    assert lr_factor(2.0, 10, 2.0, "cosine") == pytest.approx(1.0)
    assert lr_factor(6.0, 10, 2.0, "cosine") == pytest.approx(0.5)
    assert lr_factor(10.0, 10, 2.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(6.0, 10, 0.0, "linear") == pytest.approx(0.4)
    assert lr_factor(12.0, 10, 0.0, "linear") == 0.0


def test_schedule_sets_the_optimizer_lr_per_step(cycle: Dataset) -> None:
    model = SASRec(TINY, lr=0.01, epochs=4, warmup_epochs=1, lr_schedule="linear")
    model.prepare(cycle, progress=False)
    task = SequenceTask(model, cycle)
    steps = math.ceil(task.examples / TINY["batch_size"])
    seen = []
    for rows in task.batches() * 2:
        loss, _ = task.loss(rows)
        loss.backward()
        task.optimizer.step()
        task.optimizer.zero_grad()
        seen.append(task.optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(0.01 / steps)
    assert seen[steps - 1] == pytest.approx(0.01)  # end of the warm-up epoch
    assert seen[-1] == pytest.approx(0.01 * (1 - 1 / 3))  # a third of the decay done
    # a fresh task whose optimizer resumes from this state continues the schedule
    resumed = SequenceTask(model, cycle)
    resumed.optimizer.load_state_dict(task.optimizer.state_dict())
    loss, _ = resumed.loss(resumed.batches()[0])
    loss.backward()
    resumed.optimizer.step()
    expected = 0.01 * lr_factor((2 * steps + 1) / steps, 4, 1.0, "linear")
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "levers",
    [
        LIGR,
        {"loss": "gbce", "n_negatives": 8, "negative_power": 0.0},
        {"warmup_epochs": 1.0, "lr_schedule": "cosine"},
        {**LIGR, "layers": 1, "loss": "sampled_softmax", "n_negatives": 8},
        {"loss": "sampled_softmax", "n_negatives": 8, "negatives": "per_position"},
    ],
    ids=["ligr", "gbce", "warmup-cosine", "esasrec", "per-position-negatives"],
)
def test_levers_learn_the_cycle(cycle: Dataset, levers: dict) -> None:
    model = SASRec({**TINY, "epochs": 30, "lr": 5e-3, **levers}).fit(cycle)
    losses = [epoch["loss"] for epoch in model.fit_info["history"]]
    assert losses[-1] < 0.7 * losses[0]
    rows = np.arange(20)
    last = np.array([cycle.histories[row][-1] for row in rows])
    following = cycle.encode_items((cycle.item_ids.to_numpy()[last] + 1) % N_ITEMS)
    scores = model.score(cycle.histories.take(rows)).numpy()
    assert np.mean(scores.argmax(1) == following) > 0.8
