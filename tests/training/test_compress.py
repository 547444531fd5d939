"""evorec compress: quantised parameters and indexes, pruning and distillation each write a
model directory that loads, recommends and scores close to the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.data.split import Split, leave_one_out
from evorec.evaluation.evaluator import evaluate
from evorec.models import SASRec
from evorec.models.base import Recommender
from evorec.models.compression import compress_network_state, decode, sparsity
from evorec.retrieval import build_index
from evorec.retrieval.ranking import Int8Vectors, ItemVectors, dense
from evorec.serving import Service, create_app
from evorec.serving.engine import ServedModel
from evorec.store import EventStore
from evorec.training.compress import compress
from evorec.training.distill import distill
from evorec.training.incremental import UpdateConfig, grow

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"dim": 32, "max_len": 20, "batch_size": 64, "device": "cpu", "lr": 0.005, "dropout": 0.1}

# how close a compressed model's scores stay to the original's: the Pearson correlation of
# all scores of the test histories, and the share of each top-10 that is kept
CLOSE = {
    "fp16": (0.9999, 0.95),
    "int8": (0.999, 0.85),
    "dynamic-int8": (0.99, 0.8),
    "prune": (0.95, 0.6),  # 30% of the linear weights zeroed, no fine-tuning
    "sq8": (0.9999, 0.95),  # parameters unchanged; only the index is quantised
    "pq": (0.9999, 0.95),
}


@pytest.fixture(scope="module")
def split() -> Split:
    sim = simulate(n_users=300, n_items=300, n_topics=10, seed=0)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=1))
    return leave_one_out(data)


@pytest.fixture(scope="module")
def teacher(split: Split) -> SASRec:
    torch.set_num_threads(1)
    return SASRec({**TINY, "dim": 48, "layers": 2, "epochs": 8}).fit(split)


@pytest.fixture(scope="module")
def source(teacher: SASRec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return teacher.save(tmp_path_factory.mktemp("compress") / "model")


def _agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    correlation = float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])
    top_a, top_b = a.topk(10).indices.numpy(), b.topk(10).indices.numpy()
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(top_a, top_b, strict=True)])
    return correlation, float(overlap)


@pytest.mark.parametrize("method", list(CLOSE))
def test_each_method_writes_a_model_that_loads_recommends_and_scores_close(
    method, source, teacher, split, tmp_path
):
    out = compress(source, tmp_path / method, method, {"sparsity": 0.3})
    model = Recommender.load(out)
    assert model.compression is not None and model.compression["method"] == method
    histories = split.test.histories
    with torch.inference_mode():
        correlation, overlap = _agreement(model.score(histories), teacher.score(histories))
    floor_correlation, floor_overlap = CLOSE[method]
    assert correlation >= floor_correlation and overlap >= floor_overlap, (correlation, overlap)
    user = split.full.user_ids[0]
    top = model.recommend([user], k=5)
    assert len(top) == 5 and top["rank"].to_list() == [1, 2, 3, 4, 5]
    served = ServedModel(out)  # the service searches the recorded index kind
    assert served.index.kind == (method if method in ("sq8", "pq") else "exact")
    assert len(served.recommend(histories.take([0]), 5, histories[0], None).items) == 5


def _state_bytes(path: Path) -> int:
    return (path / "state.pt").stat().st_size


def test_fp16_and_int8_parameters_are_smaller_on_disk(source, tmp_path):
    original = _state_bytes(source)
    assert _state_bytes(compress(source, tmp_path / "fp16", "fp16")) < 0.55 * original
    assert _state_bytes(compress(source, tmp_path / "int8", "int8")) < 0.35 * original


def test_dynamic_int8_quantises_the_linear_layers(source, tmp_path):
    model = Recommender.load(compress(source, tmp_path / "q", "dynamic-int8"))
    modules = list(model.fitted_network().modules())
    assert not any(type(m) is torch.nn.Linear for m in modules)
    assert any(type(m) is torch.ao.nn.quantized.dynamic.Linear for m in modules)
    assert isinstance(model.item_vectors(), Int8Vectors)  # stored int8, held int8


def _dequantised(source: Path) -> Recommender:
    """The float32 model that int8 compression stands for: every tensor it encodes decoded
    back (what loading an int8 model gave before its item table stayed int8)."""
    model = Recommender.load(source)
    network = model.fitted_network()
    encoded = compress_network_state(network.state_dict(), "int8")
    network.load_state_dict({name: decode(value) for name, value in encoded.items()})
    return model


def _item_table_bytes(model: Recommender) -> int:
    table = model.fitted_network().item_embedding
    return sum(t.numel() * t.element_size() for t in (*table.parameters(), *table.buffers()))


def _arrays(vectors: ItemVectors) -> list[np.ndarray]:
    return [vectors.codes, vectors.scale] if isinstance(vectors, Int8Vectors) else [vectors]


def _served_item_bytes(served: ServedModel) -> int:
    """Bytes of item vectors a served model holds (its network's item table, the index's
    vectors and the unit vectors of similar items), memory shared by views counted once."""
    table = served.model.fitted_network().item_embedding
    arrays = [t.detach().numpy() for t in (*table.parameters(), *table.buffers())]
    arrays += _arrays(served.index.vectors) + _arrays(served.unit_vectors)
    spans = sorted(
        (a.__array_interface__["data"][0], a.__array_interface__["data"][0] + a.nbytes)
        for a in arrays
    )
    total, reached = 0, 0
    for start, stop in spans:
        total += max(0, stop - max(start, reached))
        reached = max(reached, stop)
    return total


def test_an_int8_model_ranks_as_the_dequantised_model(source, split, tmp_path):
    """Scores and top 10 of the int8 rows (held int8, looked up and scored in blocks) are
    those of the float model with the same dequantised parameters."""
    out = compress(source, tmp_path / "int8", "int8")
    model, reference = Recommender.load(out), _dequantised(source)
    vectors = model.item_vectors()
    assert isinstance(vectors, Int8Vectors) and vectors.codes.dtype == np.int8
    np.testing.assert_array_equal(dense(vectors), reference.item_vectors())
    histories = split.test.histories
    np.testing.assert_allclose(
        model.encode(histories), reference.encode(histories), rtol=1e-5, atol=1e-5
    )
    expected = reference.rank(histories, 10, exclude=histories)
    served = ServedModel(out)
    assert served.index.vectors is not None and isinstance(served.index.vectors, Int8Vectors)
    for index in (None, served.index):  # full scoring, and the service's exact index
        ranking = model.rank(histories, 10, exclude=histories, index=index)
        np.testing.assert_array_equal(ranking.items, expected.items)
        np.testing.assert_allclose(ranking.scores, expected.scores, rtol=1e-5, atol=1e-5)


def test_an_int8_model_holds_a_quarter_of_the_item_table_bytes(source, tmp_path):
    out = compress(source, tmp_path / "int8", "int8")
    original, int8 = Recommender.load(source), Recommender.load(out)
    # dim 48: 48 bytes and a 4-byte scale a row against 192 bytes
    assert _item_table_bytes(int8) <= 0.3 * _item_table_bytes(original)
    assert _served_item_bytes(ServedModel(out)) <= 0.3 * _served_item_bytes(ServedModel(source))


def test_an_int8_model_saves_reloads_and_serves_as_the_dequantised_model(source, split, tmp_path):
    out = compress(source, tmp_path / "int8", "int8")
    model = Recommender.load(out)
    again = Recommender.load(model.save(tmp_path / "again"))
    assert again.compression == model.compression
    stored = torch.load(tmp_path / "again" / "state.pt", weights_only=True)["network"]
    assert stored["item_embedding.weight"]["q"].dtype == torch.int8
    before, after = model.item_vectors(), again.item_vectors()
    assert isinstance(after, Int8Vectors) and isinstance(before, Int8Vectors)
    np.testing.assert_array_equal(after.codes, before.codes)
    np.testing.assert_array_equal(after.scale, before.scale)
    reference = _dequantised(source).save(tmp_path / "reference")  # float32, uncompressed
    user, item = split.full.user_ids[3], split.full.item_ids[5]
    answers = []
    for name, path in (("int8", tmp_path / "again"), ("reference", reference)):
        store = EventStore(f"sqlite:///{tmp_path / f'{name}.db'}")
        client = TestClient(create_app(Service(path, store)))
        answer = []
        for url in (f"/users/{user}/recommendations", f"/items/{item}/similar"):
            response = client.get(url, params={"k": 10})
            assert response.status_code == 200, response.text
            answer.append([entry["item_id"] for entry in response.json()["items"]])
        answers.append(answer)
        store.close()
    assert answers[0] == answers[1] and all(len(items) == 10 for items in answers[0])


def test_an_int8_sq8_model_serves_its_shipped_index_over_the_int8_rows(source, tmp_path):
    out = compress(source, tmp_path / "q", "int8+sq8")
    (shipped,) = out.glob("item-index-*.faiss")
    stamp = shipped.stat().st_mtime_ns
    served = ServedModel(out)
    assert served.index.kind == "sq8" and isinstance(served.index.vectors, Int8Vectors)
    assert list(out.glob("item-index-*.faiss")) == [shipped]  # reused, not rebuilt
    assert shipped.stat().st_mtime_ns == stamp


def test_an_int8_model_grows_float_items_for_an_incremental_update(source, tmp_path):
    model = Recommender.load(compress(source, tmp_path / "int8", "int8"))
    before = dense(model.item_vectors())
    grow(model, model.n_items + 2, UpdateConfig())
    after = model.item_vectors()
    assert isinstance(after, np.ndarray) and after.shape == (len(before) + 2, before.shape[1])
    np.testing.assert_array_equal(after[: len(before)], before)


def test_a_pruned_model_has_the_stated_sparsity(source, tmp_path):
    model = Recommender.load(compress(source, tmp_path / "p", "prune", {"sparsity": 0.4}))
    assert model.compression["sparsity"] == 0.4
    assert sparsity(model.fitted_network()) == pytest.approx(0.4, abs=0.01)


# recall@10 floors with every cell scanned (the codes' error alone): 8 bits per dimension,
# and the default PQ of one byte per 4 dimensions (16x smaller than float32)
@pytest.mark.parametrize(("kind", "floor"), [("sq8", 0.95), ("pq", 0.35)])
def test_quantised_indexes_agree_with_exact_search(kind, floor):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32))
    vectors = centres[rng.integers(0, 50, 20_000)] + 0.5 * rng.standard_normal((20_000, 32))
    vectors = vectors.astype(np.float32)
    queries = rng.standard_normal((100, 32)).astype(np.float32)
    seen = [rng.choice(20_000, 20, replace=False) for _ in range(100)]
    _, exact = build_index(vectors, {"kind": "exact"}).search(queries, 10, exclude=seen)
    index = build_index(vectors, {"kind": kind, "nlist": 64, "nprobe": 64})  # codes alone
    _, found = index.search(queries, 10, exclude=seen)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert recall >= floor, recall
    assert not any(np.isin(row, s).any() for row, s in zip(found, seen, strict=True))


def test_the_cli_compresses_and_refuses_a_bad_method_in_one_line(run, source, tmp_path):
    result = run("compress", "--model-dir", source, "--out", tmp_path / "c", "--method",
                 "int8+sq8")  # fmt: skip
    assert result.code == 0, result.err
    model = Recommender.load(tmp_path / "c")
    assert model.compression["state"] == "int8"
    result = run("compress", "--model-dir", source, "--out", tmp_path / "d", "--method", "zip")
    assert result.code == 1
    assert "unknown compression method" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_the_distilled_student_trains_through_the_loop(teacher, split, tmp_path):
    student = distill(SASRec({**TINY, "dim": 16, "layers": 1, "epochs": 4}), teacher, split)
    info = student.fit_info
    assert info["epochs"] >= 1 and "NDCG@10" in info["history"][0]
    assert info["distilled"] == {"alpha": 0.5, "temperature": 1.0}
    metrics = evaluate(student, split.test, ks=(10,)).metrics
    assert np.isfinite(metrics["NDCG@10"])
    loaded = Recommender.load(student.save(tmp_path / "student"))
    assert loaded.config.dim == 16


def test_distillation_follows_the_teacher(teacher, split):
    """With the teacher's scores as the only target (alpha 1), the student ranks the
    catalogue much like the teacher; trained alone it ranks less like it."""
    settings = {**TINY, "dim": 16, "layers": 1, "epochs": 6, "patience": 6}
    distilled = distill(SASRec(settings), teacher, split, alpha=1.0)
    alone = SASRec(settings).fit(split)
    histories = split.test.histories
    with torch.inference_mode():
        target = teacher.score(histories)
        assert (
            _agreement(distilled.score(histories), target)[0]
            > _agreement(alone.score(histories), target)[0]
        )


def test_a_compressed_training_run_evaluates_and_recommends_from_the_cli(run, split, tmp_path):
    """``evorec train --no-refit`` -> ``compress`` -> ``evaluate`` and ``recommend`` on the
    compressed directory, its test NDCG@10 close to the original's (within 0.02)."""
    events = split.full.events.with_columns(
        user_id=split.full.user_ids.gather(split.full.events["user_idx"]),
        item_id=split.full.item_ids.gather(split.full.events["item_idx"]),
    ).select("user_id", "item_id", "timestamp")
    data = tmp_path / "events.csv"
    events.write_csv(data)
    source = tmp_path / "model"
    settings = {**TINY, "epochs": 3, "data.preprocess.min_item_events": 1}
    sets = [x for key, value in settings.items() for x in ("--set", f"{key}={value}")]
    result = run("train", "--data", data, "--model", "sasrec", "--no-refit", *sets,
                 "--out", source, "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    out = tmp_path / "small"
    result = run("compress", "--model-dir", source, "--out", out, "--method", "dynamic-int8+sq8")
    assert result.code == 0, result.err
    scores = {}
    for name, path in {"original": source, "compressed": out}.items():
        result = run("evaluate", "--model-dir", path, "--json", tmp_path / f"{name}.json")
        assert result.code == 0, result.err
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["NDCG@10"]
    assert scores["compressed"] == pytest.approx(scores["original"], abs=0.02)
    user = str(split.full.user_ids[0])
    result = run("recommend", "--model-dir", out, "--user", user, "-k", "5")
    assert result.code == 0, result.err
