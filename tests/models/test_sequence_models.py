"""The interest-evolution models (LSTM, Caser, BERT4Rec, TiSASRec, HSTU) and the shared
sequence machinery they need: event features, model-specific training objectives, time
buckets, mixed precision and gradient accumulation. The Recommender contract itself is
checked for every model in test_models.py."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from evorec.data.dataset import Dataset
from evorec.data.histories import Histories
from evorec.data.load import from_frame
from evorec.data.split import leave_one_out
from evorec.errors import NonFiniteError
from evorec.evaluation.evaluator import evaluate
from evorec.models import MODELS, BERT4Rec, MostPopular, Recommender, SequentialRecommender
from evorec.models.hstu import HSTUConfig, HSTULayer
from evorec.models.sasrec import SASRecConfig, SASRecNetwork
from evorec.models.sequential import EventFeatures, SequenceNetwork, interval_buckets
from evorec.models.tisasrec import TiSASRecNetwork, time_features
from evorec.training.trainer import SequenceTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEW = ["lstm", "caser", "bert4rec", "tisasrec", "hstu"]
CAUSAL = ["lstm", "caser", "tisasrec", "hstu"]
TIME_AWARE = ["tisasrec", "hstu"]
LOOSE = {"min_user_events": 1, "min_item_events": 1}
TINY = {"epochs": 1, "dim": 16, "max_len": 10, "batch_size": 16, "device": "cpu"}
BEHAVIORS = ["pv", "cart", "fav", "buy", None]
START = 1_700_000_000  # 2023-11-14 22:13:20 UTC


def event_frame(seed: int = 0, n_users: int = 40, n_items: int = 25) -> pl.DataFrame:
    """Users with 4..14 events, unix-second times spread over weeks, behaviours (some null)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": [], "behavior": []}
    for u in range(n_users):
        n = int(rng.integers(4, 15))
        rows["user_id"] += [u] * n
        rows["item_id"] += rng.integers(0, n_items, n).tolist()
        rows["timestamp"] += (START + np.cumsum(rng.integers(1, 200_000, n))).tolist()
        rows["behavior"] += [BEHAVIORS[b] for b in rng.integers(0, len(BEHAVIORS), n)]
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return from_frame(event_frame(), behavior="behavior", preprocess_config=LOOSE)


_FITTED: dict[str, SequentialRecommender] = {}


def fitted(name: str, dataset: Dataset) -> SequentialRecommender:
    """Each new model fitted once (one tiny epoch) on the module's dataset."""
    if name not in _FITTED:
        model = MODELS[name](TINY).fit(dataset)
        assert isinstance(model, SequentialRecommender)
        _FITTED[name] = model
    return _FITTED[name]


def network(name: str, dataset: Dataset) -> SequenceNetwork:
    net = fitted(name, dataset).fitted_network()
    net.eval()
    return net


def random_batch(
    n_items: int, n_behaviors: int, rows: int = 5, length: int = 10, seed: int = 1
) -> tuple[torch.Tensor, EventFeatures]:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, n_items + 1, (rows, length), generator=gen)
    gaps = torch.randint(1, 100_000, (rows, length), generator=gen)
    behaviors = torch.randint(0, n_behaviors + 1, (rows, length), generator=gen)
    items[-1, length // 2 :] = 0  # a right-padded row
    behaviors[-1, length // 2 :] = 0
    return items, EventFeatures(START + gaps.cumsum(1), behaviors)


# -- shared machinery -------------------------------------------------------------------


def test_padded_events_align_times_and_behaviors():
    hist = Histories(
        np.array([0, 3, 4, 4]),
        np.array([5, 6, 7, 8]),
        np.array([10, 20, 30, 40]),
        np.array([0, -1, 2, 1]),
    )
    padded = hist.padded_events(2)
    np.testing.assert_array_equal(padded.items, [[7, 8], [9, 0], [0, 0]])
    np.testing.assert_array_equal(padded.lengths, [2, 1, 0])
    np.testing.assert_array_equal(padded.timestamps, [[20, 30], [40, 0], [0, 0]])
    # behaviour code + 1; unknown (-1) and padding are both 0
    np.testing.assert_array_equal(padded.behaviors, [[0, 3], [2, 0], [0, 0]])
    bare = Histories.from_lists([[1, 2]]).padded_events(5)
    assert bare.timestamps is None and bare.behaviors is None


def test_next_item_objective_feeds_the_features_of_the_input_positions():
    model = MODELS["lstm"](TINY)
    items = torch.tensor([[1, 2, 3], [4, 5, 0]])
    features = EventFeatures(torch.tensor([[10, 20, 30], [40, 50, 0]]), torch.ones_like(items))
    inputs, input_features, targets = model.training_example(items, features, torch.Generator())
    assert inputs.tolist() == [[1, 2], [4, 5]]
    assert targets.tolist() == [[2, 3], [5, 0]]
    assert input_features.timestamps.tolist() == [[10, 20], [40, 50]]
    assert input_features.behaviors.shape == (2, 2)


def test_batches_carry_timestamps_only_for_timed_data(dataset):
    model = fitted("hstu", dataset)
    hist = dataset.histories.take(np.array([0, 1]))
    _, features, _ = model.padded_batch(hist, 10, torch.device("cpu"))
    assert features.timestamps is not None and features.behaviors is not None
    frame = event_frame().drop("timestamp")
    untimed = from_frame(frame, behavior="behavior", preprocess_config=LOOSE)
    model = MODELS["tisasrec"](TINY)
    model.dataset = untimed
    _, features, _ = model.padded_batch(untimed.histories, 10, torch.device("cpu"))
    assert features.timestamps is None and features.behaviors is not None
    # without timestamps the intervals are position differences
    items = torch.zeros(2, 4, dtype=torch.long)
    assert features.times(items).tolist() == [[0, 1, 2, 3]] * 2


def test_interval_buckets_are_log2_and_clipped():
    delta = torch.tensor([0, 1, 2, 3, 4, 7, 8, -1, -5, 1023, 1024, 2**40])
    assert interval_buckets(delta, 12).tolist() == [0, 1, 2, 2, 3, 3, 4, 1, 3, 10, 11, 11]
    assert interval_buckets(torch.tensor([2**62]), 100).item() == 63  # no float32 rounding
    assert interval_buckets(torch.tensor([2**31 - 1, 2**31]), 100).tolist() == [31, 32]


def test_tisasrec_time_features():
    stamps = [0, START, START + 1, START + 1, START + 3_600 * 30]
    hour, weekday, recency = time_features(torch.tensor([stamps]), 8)
    expected = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t in stamps]
    assert hour[0].tolist() == [d.hour for d in expected]
    assert weekday[0].tolist() == [d.weekday() for d in expected]
    # first event: its own bucket (n_buckets); then gaps START, 1, 0, 108000 -> clipped/log2
    assert recency[0].tolist() == [8, 7, 1, 0, 7]
    hour, weekday, recency = time_features(torch.tensor([[START]]), 8)
    assert recency.tolist() == [[8]]


def test_tisasrec_attention_uses_interval_biases(dataset):
    torch.manual_seed(0)
    net = TiSASRecNetwork(dataset.n_items, MODELS["tisasrec"].config_class(**TINY))
    net.eval()
    with torch.no_grad():
        for bias in net.interval_bias:
            bias.weight.normal_()
    items = torch.tensor([[3, 4, 5, 6]])
    close = EventFeatures(torch.tensor([[0, 10, 20, 30]]))
    far = EventFeatures(torch.tensor([[0, 10_000, 20_000, 30_000]]))
    with torch.no_grad():
        a, b = net(items, close), net(items, far)
    torch.testing.assert_close(a[:, 0], b[:, 0])  # the first event attends only itself
    assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-4)


def test_hstu_layer_matches_the_formula():
    """Y = x + W_o(LayerNorm(A V) * U), A = SiLU(QK^T + rab_pos + rab_time) / n, causal."""
    torch.manual_seed(0)
    config = HSTUConfig(dim=4, heads=2, max_len=6, time_buckets=5, dropout=0.0)
    layer = HSTULayer(config).eval()
    with torch.no_grad():
        layer.position_bias.normal_()
        layer.time_bias.weight.normal_()
    x = torch.randn(1, 4, 4)
    times = torch.tensor([[0, 1, 3, 20]])
    positions = torch.arange(4)
    distance = positions[:, None] - positions[None, :]
    buckets = interval_buckets(times[:, :, None] - times[:, None, :], 5)
    assert buckets[0].tolist() == [[0, 1, 2, 4], [1, 0, 2, 4], [2, 2, 0, 4], [4, 4, 4, 0]]
    with torch.no_grad():
        got = layer(x, distance, buckets)
        u, v, q, k = F.silu(layer.uvqk(layer.norm(x[0]))).split(4, dim=-1)
        out = torch.zeros(4, 4)
        for h in range(2):
            cols = slice(2 * h, 2 * h + 2)
            for i in range(4):
                for j in range(i + 1):
                    score = q[i, cols] @ k[j, cols]
                    score = score + layer.position_bias[h, i - j]
                    score = score + layer.time_bias.weight[buckets[0, i, j], h]
                    out[i, cols] += F.silu(score) / 6 * v[j, cols]
        expected = x[0] + layer.out(layer.attn_norm(out) * u)
    torch.testing.assert_close(got[0], expected, rtol=1e-5, atol=1e-5)


# -- shapes and causality ---------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_shapes(name, dataset):
    model = fitted(name, dataset)
    net = network(name, dataset)
    items, features = random_batch(dataset.n_items, len(dataset.behaviors))
    with torch.no_grad():
        assert net(items, features).shape == (5, 10, TINY["dim"])
        assert net(items).shape == (5, 10, TINY["dim"])
    hist = dataset.histories.take(np.arange(7))
    assert model.encode(hist).shape == (7, TINY["dim"])
    assert model.item_vectors().shape == (dataset.n_items, TINY["dim"])
    extra = 1 if name == "bert4rec" else 0  # the [MASK] row is no item
    assert net.item_embedding.num_embeddings == dataset.n_items + 1 + extra


@pytest.mark.parametrize("name", CAUSAL)
def test_network_is_causal(name, dataset):
    net = network(name, dataset)
    n_behaviors = len(dataset.behaviors)
    items, features = random_batch(dataset.n_items, n_behaviors)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        base = net(items, features)
        for cut in (1, 4, 9):
            changed = items.clone()
            changed[:, cut:] = torch.randint(1, dataset.n_items + 1, (5, 10 - cut), generator=gen)
            times = features.timestamps.clone()
            times[:, cut:] += torch.randint(1, 10**6, (5, 10 - cut), generator=gen)
            behaviors = features.behaviors.clone()
            behaviors[:, cut:] = torch.randint(0, n_behaviors + 1, (5, 10 - cut), generator=gen)
            out = net(changed, EventFeatures(times, behaviors))
            torch.testing.assert_close(out[:, :cut], base[:, :cut], rtol=0, atol=1e-5)
            assert not torch.allclose(out[:, cut:], base[:, cut:], atol=1e-3)


def test_caser_sees_exactly_the_last_window_events(dataset):
    net = network("caser", dataset)
    window = MODELS["caser"].config_class().window
    items, _ = random_batch(dataset.n_items, 0, rows=2, length=10)
    with torch.no_grad():
        base = net(items)
        early = items.clone()
        early[:, : 10 - window] = 1  # outside the window of the last position
        assert torch.equal(net(early)[:, -1], base[:, -1])
        inside = items.clone()
        inside[:, 10 - window] = items[:, 10 - window] % dataset.n_items + 1
        assert not torch.allclose(net(inside)[:, -1], base[:, -1])


@pytest.mark.parametrize("name", TIME_AWARE)
def test_encode_passes_the_training_features(name, dataset):
    """encode reads the histories' timestamps and behaviours, as the trainer feeds them."""
    model = fitted(name, dataset)
    net = network(name, dataset)
    hist = dataset.histories.take(np.arange(6))
    padded = hist.padded_events(TINY["max_len"])
    features = EventFeatures(
        torch.from_numpy(padded.timestamps), torch.from_numpy(padded.behaviors)
    )
    with torch.no_grad():
        hidden = net(torch.from_numpy(padded.items), features)
    expected = hidden[torch.arange(6), torch.from_numpy(padded.lengths - 1)]
    np.testing.assert_allclose(model.encode(hist), expected.numpy(), rtol=1e-5, atol=1e-5)
    later = Histories(hist.offsets, hist.items, hist.timestamps * 3 + 12_345, hist.behaviors)
    assert not np.allclose(model.encode(later), model.encode(hist), atol=1e-4)


def test_hstu_reads_behaviors(dataset):
    model = fitted("hstu", dataset)
    net = network("hstu", dataset)
    assert net.behavior_embedding.num_embeddings == len(dataset.behaviors) + 1
    hist = dataset.histories.take(np.arange(6))
    unknown = Histories(hist.offsets, hist.items, hist.timestamps, np.full_like(hist.behaviors, -1))
    other = Histories(hist.offsets, hist.items, hist.timestamps, (hist.behaviors + 2) % 4)
    bare = Histories(hist.offsets, hist.items, hist.timestamps)
    assert not np.allclose(model.encode(other), model.encode(hist), atol=1e-4)
    # unknown behaviours share the padding embedding (zero): the same as none at all
    np.testing.assert_allclose(model.encode(unknown), model.encode(bare), rtol=1e-6, atol=1e-6)


# -- BERT4Rec ---------------------------------------------------------------------------


def test_bert4rec_masks_only_real_positions(dataset):
    model = fitted("bert4rec", dataset)
    assert isinstance(model, BERT4Rec)
    mask = model.mask_token
    assert mask == dataset.n_items + 1
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, dataset.n_items + 1, (400, 10), generator=gen)
    items[::2, 6:] = 0
    features = EventFeatures(torch.arange(10).expand(400, 10))
    inputs, same, targets = model.training_example(items, features, gen)
    masked = inputs == mask
    assert same is features
    assert torch.equal(masked, targets > 0)
    assert torch.equal(targets[masked], items[masked])
    assert torch.equal(inputs[~masked], items[~masked])
    assert not masked[items == 0].any()
    assert masked.any(1).all()  # every sequence has a masked position
    # each event with probability p, plus the last one of a sequence left without a mask
    p, lengths = model.config.mask_prob, (items > 0).sum(1).double()
    expected = (p * lengths + (1 - p) ** lengths).sum() / lengths.sum()
    assert abs(masked.sum().item() / lengths.sum().item() - expected.item()) < 0.02


def test_bert4rec_next_item_examples_mask_one_event_and_drop_the_rest(dataset):
    model = fitted("bert4rec", dataset)
    model.config.next_item_prob = 1.0
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, dataset.n_items + 1, (300, 10), generator=gen)
    items[::3, 5:] = 0
    inputs, _, targets = model.training_example(items, EventFeatures(), gen)
    masked = inputs == model.mask_token
    assert torch.equal(masked.sum(1), torch.ones(300, dtype=torch.long))
    cut = masked.long().argmax(1)
    lengths = (items > 0).sum(1)
    assert (cut >= 1).all() and (cut < lengths).all()
    assert set(cut.tolist()) == set(range(1, 10))  # every position of the history is cut
    torch.testing.assert_close(targets[masked], items[masked])
    positions = torch.arange(10)
    before, after = positions < cut[:, None], positions > cut[:, None]
    assert torch.equal(inputs[before], items[before]) and not inputs[after].any()


def test_bert4rec_loss_covers_masked_positions_only(dataset):
    model = fitted("bert4rec", dataset)
    trainer = SequenceTrainer(model, dataset, None)
    net = network("bert4rec", dataset)  # eval: no dropout
    rows = np.arange(8)
    state = trainer.generator.get_state()
    with torch.no_grad():
        loss, count = trainer.loss(rows)
        trainer.generator.set_state(state)
        items, features, _ = model.padded_batch(
            trainer.sequences.take(rows), model.config.max_len, torch.device("cpu")
        )
        inputs, _, targets = model.training_example(items, features, trainer.generator)
        masked = inputs == model.mask_token
        logits = net(inputs)[masked] @ net.item_weights().T
        expected = F.cross_entropy(logits, targets[masked] - 1)
    assert count == int(masked.sum()) < int((items > 0).sum())
    torch.testing.assert_close(loss, expected)


def test_bert4rec_reads_the_appended_mask(dataset):
    model = fitted("bert4rec", dataset)
    net = network("bert4rec", dataset)
    max_len = model.config.max_len
    hist = Histories.from_lists([list(range(15)), [4, 2], [7]])
    items, _, read = model.inference_batch(hist, torch.device("cpu"))
    assert read.tolist() == [max_len - 1, 2, 1]
    assert items[0].tolist() == [i + 1 for i in range(15 - max_len + 1, 15)] + [model.mask_token]
    assert items[1].tolist()[:4] == [5, 3, model.mask_token, 0]
    with torch.no_grad():
        hidden = net(items)
    np.testing.assert_allclose(
        model.encode(hist), hidden[torch.arange(3), read].numpy(), rtol=1e-5, atol=1e-5
    )
    tail = Histories.from_lists([list(range(15))[-(max_len - 1) :]])
    np.testing.assert_allclose(model.encode(hist)[:1], model.encode(tail), rtol=1e-5, atol=1e-6)


def test_bert4rec_attends_both_ways(dataset):
    net = network("bert4rec", dataset)
    items, _ = random_batch(dataset.n_items, 0, rows=2, length=6)
    changed = items.clone()
    changed[:, -1] = items[:, -1] % dataset.n_items + 1
    with torch.no_grad():
        assert not torch.allclose(net(items)[:, 0], net(changed)[:, 0], atol=1e-4)
        # padding is ignored: more padding columns change no real position
        padded = F.pad(items, (0, 3))
        torch.testing.assert_close(net(padded)[:, :6], net(items), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
def test_position_embeddings_count_from_the_chosen_end(positions):
    net = SASRecNetwork(9, SASRecConfig(dim=8, max_len=6, positions=positions))
    items = torch.tensor([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        added = net.embed(items) - net.embed_items(items) * net.scale
    rows = net.position_embedding.weight.detach()
    expected = (
        [[0, 1, 2], list(range(6))]
        if positions == "from_start"
        else [[2, 1, 0], [5, 4, 3, 2, 1, 0]]
    )
    for row, order in enumerate(expected):
        torch.testing.assert_close(added[row, : len(order)], rows[order])


# -- persistence ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_save_load_round_trip_with_features(name, dataset, tmp_path):
    model = fitted(name, dataset)
    loaded = Recommender.load(model.save(tmp_path / name))
    hist = dataset.histories  # with timestamps and behaviours
    np.testing.assert_array_equal(loaded.encode(hist), model.encode(hist))
    assert torch.equal(loaded.score(hist), model.score(hist))


def test_bert4rec_resume_continues_the_masking_stream(dataset, tmp_path):
    """A checkpoint carries the mask generator: 1 epoch + resume = 2 epochs at once."""
    whole = MODELS["bert4rec"]({**TINY, "epochs": 2}).fit(dataset).item_vectors()
    first = MODELS["bert4rec"](TINY)
    first.checkpoint_path = tmp_path / "checkpoint.pt"
    first.fit(dataset)
    resumed = MODELS["bert4rec"]({**TINY, "epochs": 2})
    resumed.checkpoint_path, resumed.resume = first.checkpoint_path, True
    np.testing.assert_array_equal(resumed.fit(dataset).item_vectors(), whole)


# -- training options -------------------------------------------------------------------


def adam_steps(trainer: SequenceTrainer) -> int:
    param = next(trainer.network.parameters())
    return int(trainer.optimizer.state[param]["step"])


@pytest.mark.parametrize("accumulate", [1, 3])
def test_gradient_accumulation_steps(dataset, accumulate):
    model = MODELS["lstm"]({**TINY, "epochs": 2, "accumulate": accumulate})
    model.dataset = dataset
    model.network = model.build_network(dataset.n_items)
    trainer = SequenceTrainer(model, dataset, None)
    n_batches = len(trainer.batches())
    trainer.run()
    assert adam_steps(trainer) == 2 * math.ceil(n_batches / accumulate)


def test_amp_is_a_no_op_on_cpu(dataset):
    plain = MODELS["tisasrec"](TINY).fit(dataset).item_vectors()
    amp = MODELS["tisasrec"]({**TINY, "amp": True}).fit(dataset).item_vectors()
    np.testing.assert_array_equal(plain, amp)


# -- learning ---------------------------------------------------------------------------


def cycle_data(n_users: int = 100, n_items: int = 30, seed: int = 0) -> Dataset:
    """Item i is always followed by i + 1 (mod n); an hour between events, behaviours."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"user_id": [], "item_id": [], "timestamp": [], "behavior": []}
    for u in range(n_users):
        start, n = int(rng.integers(0, n_items)), int(rng.integers(8, 20))
        rows["user_id"] += [u] * n
        rows["item_id"] += [(start + j) % n_items for j in range(n)]
        rows["timestamp"] += [START + 3_600 * j for j in range(n)]
        rows["behavior"] += [BEHAVIORS[j % 2] for j in range(n)]
    return from_frame(pl.DataFrame(rows), behavior="behavior", preprocess_config=LOOSE)


LEARN = {"dim": 32, "max_len": 10, "lr": 5e-3, "dropout": 0.1, "device": "cpu", "seed": 0}


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("lstm", {"epochs": 6, "batch_size": 32}),
        ("caser", {"epochs": 10, "batch_size": 32}),
        # the cloze task scores few positions per sequence: more, smaller steps
        ("bert4rec", {"epochs": 40, "batch_size": 16, "mask_prob": 0.3, "layers": 1, "heads": 1}),
        ("tisasrec", {"epochs": 6, "batch_size": 32}),
        ("hstu", {"epochs": 10, "batch_size": 32}),
    ],
)
def test_learns_a_deterministic_pattern(name, config):
    split = leave_one_out(cycle_data())
    pop = evaluate(MostPopular().fit(split), split.test, ks=(1,)).metrics["HR@1"]
    model = MODELS[name]({**LEARN, **config, "patience": config["epochs"]}).fit(split)
    hr = evaluate(model, split.test, ks=(1,)).metrics["HR@1"]
    assert hr >= 0.8, hr
    assert hr > pop + 0.5


def test_temperature_scores_by_cosine_similarity(dataset, tmp_path):
    """With a temperature, ``i`` and ``v`` are unit vectors, scores are their cosine, the
    training loss divides it by the temperature, and save/load keeps all of it."""
    model = MODELS["sasrec"]({**TINY, "temperature": 0.1}).fit(dataset)
    hist = dataset.histories
    users, items = model.encode(hist), model.item_vectors()
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(users[hist.lengths > 0], axis=1), 1, rtol=1e-5)
    assert model.score(hist).abs().max() <= 1 + 1e-5
    hidden, weight = torch.randn(3, 16), torch.randn(5, 16)
    scaled, unit = model.scoring_space(hidden, weight)
    expected = F.cosine_similarity(hidden[:, None], weight[None], dim=-1) / 0.1
    torch.testing.assert_close(scaled @ unit.T, expected)
    loaded = Recommender.load(model.save(tmp_path / "cosine"))
    assert torch.equal(loaded.score(hist), model.score(hist))


def test_temperature_model_learns_a_deterministic_pattern():
    split = leave_one_out(cycle_data())
    config = {**LEARN, "epochs": 6, "batch_size": 32, "patience": 6, "temperature": 0.1}
    model = MODELS["sasrec"](config).fit(split)
    assert evaluate(model, split.test, ks=(1,)).metrics["HR@1"] >= 0.8


# -- divergence -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "lightgcn", "multitask"])
def test_diverged_training_is_an_error_not_a_perfect_score(name, tmp_path):
    """An absurd learning rate makes the loss or the scores non-finite: training stops with
    one message naming the model and epoch, instead of a NaN validation score ranking first."""
    split = leave_one_out(cycle_data())
    model = MODELS[name]({"lr": 1e30, "epochs": 3, "seed": 0})
    with pytest.raises(NonFiniteError, match=rf"{model.name}.*epoch 1"):
        model.fit(split)
    # without validation the loss itself is checked
    model = MODELS[name]({"lr": 1e30, "epochs": 4, "seed": 0})
    with pytest.raises(NonFiniteError, match=rf"{model.name}: the training loss became nan"):
        model.fit(split.full)


def test_cli_train_refuses_a_diverged_model(run, tmp_path):
    data = tmp_path / "events.csv"
    events = cycle_data().events
    events.select(user_id="user_idx", item_id="item_idx", timestamp="timestamp").write_csv(data)
    out = tmp_path / "model"
    result = run(
        "train",
        "--data",
        data,
        "--model",
        "sasrec",
        "--out",
        out,
        "--set",
        "lr=1e30",
        "--set",
        "epochs=2",
        "--set",
        "data.preprocess={min_user_events: 1, min_item_events: 1}",
    )
    assert result.code != 0
    assert "epoch 1" in result.err and "Traceback" not in result.err
    assert not (out / "metrics.json").exists()


class _Payload:
    """Unpickling this object would create ``marker``: the shape of a crafted checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_never_runs_code_from_a_checkpoint(run, tmp_path):
    data = tmp_path / "events.csv"
    events = cycle_data().events
    events.select(user_id="user_idx", item_id="item_idx", timestamp="timestamp").write_csv(data)
    out = tmp_path / "model"
    args = ["train", "--data", data, "--model", "sasrec", "--out", out, "--set", "epochs=1"]
    args += ["--set", "data.preprocess={min_user_events: 1, min_item_events: 1}"]
    assert run(*args).code == 0
    marker = tmp_path / "executed"
    torch.save({"epoch": 1, "network": _Payload(marker)}, out / "checkpoint.pt")
    result = run(*args, "--set", "epochs=2", "--resume")
    assert result.code != 0
    assert "checkpoint.pt" in result.err and "Traceback" not in result.err
    assert not marker.exists()
