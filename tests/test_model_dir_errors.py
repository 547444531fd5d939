"""Broken model directories: every file a model directory holds, broken in each way it can
be, gives one ``ModelDirError`` naming that file, from ``Recommender.load``, from
``ServedModel``, from ``evorec recommend`` (one line, no traceback) and in the watcher, which
keeps polling and swaps in the next good version.

One small real model (SASRec with item attributes, numeric item columns and user profiles,
so that every part of ``state.pt`` is there) is trained once; each case copies its
directory and breaks one file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from conftest import ANSI, retrained_copy
from fastapi.testclient import TestClient

import evorec
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.schema import RawData
from evorec.data.simulate import simulate
from evorec.errors import ModelDirError
from evorec.modeldir import model_version, point
from evorec.models.base import MANIFEST, Recommender
from evorec.retrieval import load_or_build_index
from evorec.serving import Service, create_app
from evorec.serving.engine import ServedModel
from evorec.serving.watch import ModelWatcher
from evorec.store import EventStore

WAIT = 60.0  # seconds a watcher test waits at most for a poll's effect (never reached)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    raw = simulate(n_users=60, n_items=40, n_topics=4, seed=1).raw
    users = raw.events.select("user_id").unique().sort("user_id")
    users = users.with_columns(
        band=(pl.col("user_id") % 3).cast(pl.Utf8), score=pl.col("user_id") / 60.0
    )
    raw = RawData(raw.events, raw.items, users, raw.has_time, raw.name)
    data = preprocess(raw, PreprocessConfig(min_user_events=3, min_item_events=2))
    model = evorec.SASRec(
        epochs=1,
        dim=8,
        max_len=10,
        device="cpu",
        item_features=["id", "attributes", "numeric"],
        user_features=True,
    ).fit(data)
    torch.set_num_threads(threads)
    return model.save(tmp_path_factory.mktemp("model-dir-errors") / "good")


# --------------------------------------------------------------------------- breakers


def write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_bytes(content)


def truncate(name: str) -> Callable[[Path], None]:
    def breaker(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])

    return breaker


def remove(name: str) -> Callable[[Path], None]:
    return lambda directory: (directory / name).unlink()


def manifest(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def breaker(directory: Path) -> None:
        values = json.loads((directory / MANIFEST).read_text())
        (directory / MANIFEST).write_text(json.dumps(change(values)))

    return breaker


def state(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Change the parameters in place and save them again (a well-formed file)."""

    def breaker(directory: Path) -> None:
        values = torch.load(directory / "state.pt", weights_only=True)
        change(values)
        torch.save(values, directory / "state.pt")

    return breaker


def events(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    def breaker(directory: Path) -> None:
        file = directory / "dataset" / "events.parquet"
        change(pl.read_parquet(file)).write_parquet(file)

    return breaker


def set_key(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        mapping = mapping[key]
    mapping[last] = value


def drop_key(mapping: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        mapping = mapping[key]
    del mapping[last]


EMBEDDING = "item_embedding.weight"  # a key of state["network"]

# (case, file named in the error, breaker, words the message must hold)
CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("yaml-syntax", "config.yaml", write("config.yaml", b"dim: [8\n"), "not valid YAML"),
    ("yaml-list", "config.yaml", write("config.yaml", b"- dim\n- 8\n"), "not a mapping"),
    ("yaml-empty", "config.yaml", write("config.yaml", b""), "empty file"),
    ("yaml-binary", "config.yaml", write("config.yaml", b"dim: \xff\xfe\n"), "YAML"),
    ("config-type", "config.yaml", write("config.yaml", b"dim: wide\n"), "dim"),
    ("config-unknown", "config.yaml", write("config.yaml", b"depth: 3\n"), "depth"),
    ("config-missing", "", remove("config.yaml"), "missing config.yaml"),
    ("manifest-array", MANIFEST, write(MANIFEST, b"[1, 2]"), "JSON array"),
    ("manifest-text", MANIFEST, write(MANIFEST, b"not json"), "unreadable manifest"),
    ("manifest-binary", MANIFEST, write(MANIFEST, b"\xff\xfe\x00{"), "unreadable manifest"),
    ("manifest-no-model", MANIFEST, manifest(lambda m: {"format": 1}), "names no model"),
    ("manifest-model-number", MANIFEST, manifest(lambda m: {**m, "model": 3}), "'model'"),
    ("manifest-unknown-model", MANIFEST, manifest(lambda m: {**m, "model": "zz"}), "'zz'"),
    ("manifest-fit-info", MANIFEST, manifest(lambda m: {**m, "fit_info": [1]}), "'fit_info'"),
    ("manifest-cutoff", MANIFEST, manifest(lambda m: {**m, "cutoff": 5}), "'cutoff'"),
    ("manifest-format", "", manifest(lambda m: {**m, "format": "1"}), "model format"),
    ("manifest-missing", "", remove(MANIFEST), f"missing {MANIFEST}"),
    ("state-empty", "state.pt", write("state.pt", b""), "empty file (0 bytes)"),
    ("state-truncated", "state.pt", truncate("state.pt"), "truncated"),
    ("state-garbage", "state.pt", write("state.pt", b"\x80\x02garbage"), "truncated"),
    ("state-missing", "", remove("state.pt"), "missing state.pt"),
    ("state-tensor", "state.pt", lambda d: torch.save(torch.ones(3), d / "state.pt"), "Tensor"),
    ("state-no-network", "state.pt", state(lambda s: drop_key(s, "network")), "network"),
    (
        "state-shape",
        "state.pt",
        state(lambda s: s["network"].update({EMBEDDING: torch.zeros(41, 3)})),
        "size mismatch",
    ),
    (
        "state-items",
        "state.pt",
        state(lambda s: s["network"].update({EMBEDDING: torch.zeros(31, 8)})),
        "item_embedding",
    ),
    (
        "state-nan",
        "state.pt",
        state(lambda s: s["network"][EMBEDDING][5].fill_(float("nan"))),
        "not finite",
    ),
    (
        "state-feature-rows",
        "state.pt",
        state(lambda s: set_key(s, "features.numeric", torch.zeros(7, 1))),
        "'numeric': 7 rows for 40 items",
    ),
    (
        "state-feature-tokens",
        "state.pt",
        state(lambda s: s["features"]["attribute_values"].fill_(99)),
        "'attribute_values'",
    ),
    (
        "state-feature-kind",
        "state.pt",
        state(lambda s: set_key(s, "features.trained", "yes")),
        "'trained'",
    ),
    (
        "state-user-tokens",
        "state.pt",
        state(lambda s: s["user_features"]["tokens"].fill_(-2)),
        "user features 'tokens'",
    ),
    (
        "state-user-rows",
        "state.pt",
        state(lambda s: set_key(s, "user_features.numeric", torch.zeros(2, 1))),
        "user features 'numeric'",
    ),
    (
        "state-directory",
        "state.pt",
        lambda d: (remove("state.pt")(d), (d / "state.pt").mkdir()),
        "cannot read parameters",
    ),
    ("events-truncated", "dataset/events.parquet", truncate("dataset/events.parquet"), "Parquet"),
    ("events-garbage", "dataset/events.parquet", write("dataset/events.parquet", b"x"), "Parquet"),
    ("events-empty", "dataset/events.parquet", write("dataset/events.parquet", b""), "Parquet"),
    (
        "events-column",
        "dataset/events.parquet",
        events(lambda e: e.drop("item_idx")),
        "'item_idx'",
    ),
    (
        "events-range",
        "dataset/events.parquet",
        events(lambda e: e.with_columns(pl.col("item_idx") + 1000)),
        "item_idx",
    ),
    (
        "events-order",
        "dataset/events.parquet",
        events(lambda e: e.reverse()),
        "grouped by user",
    ),
    (
        "events-behavior",
        "dataset/events.parquet",
        events(lambda e: e.with_columns(behavior=pl.lit(7, pl.Int64))),
        "behavior",
    ),
    (
        "events-time",
        "dataset/events.parquet",
        events(lambda e: e.with_columns(timestamp=pl.lit("noon"))),
        "timestamp",
    ),
    ("events-missing", "dataset", remove("dataset/events.parquet"), "events.parquet"),
    (
        "user-ids-truncated",
        "dataset/user_ids.parquet",
        truncate("dataset/user_ids.parquet"),
        "Parquet",
    ),
    (
        "item-ids-duplicated",
        "dataset/item_ids.parquet",
        lambda d: pl.DataFrame({"item_id": [1] * 40}).write_parquet(
            d / "dataset" / "item_ids.parquet"
        ),
        "unique",
    ),
    (
        "item-ids-column",
        "dataset/item_ids.parquet",
        lambda d: pl.DataFrame({"id": range(40)}).write_parquet(d / "dataset" / "item_ids.parquet"),
        "'item_id'",
    ),
    ("items-garbage", "dataset/items.parquet", write("dataset/items.parquet", b"PAR1"), "Parquet"),
    ("users-truncated", "dataset/users.parquet", truncate("dataset/users.parquet"), "Parquet"),
    ("dataset-json-array", "dataset/dataset.json", write("dataset/dataset.json", b"[]"), "JSON"),
    ("dataset-json-text", "dataset/dataset.json", write("dataset/dataset.json", b"{"), "JSON"),
    (
        "dataset-json-field",
        "dataset/dataset.json",
        write("dataset/dataset.json", b'{"format": 1, "behaviors": "pv"}'),
        "behaviors",
    ),
]


def broken_copy(model_dir: Path, target: Path, breaker: Callable[[Path], None]) -> Path:
    shutil.copytree(model_dir, target)
    breaker(target)
    return target


def expected_path(directory: Path, name: str) -> str:
    return str(directory / name) if name else str(directory)


@pytest.mark.parametrize(
    ("name", "breaker", "words"),
    [pytest.param(name, breaker, words, id=case) for case, name, breaker, words in CASES],
)
def test_each_broken_file_is_one_model_dir_error_naming_it(
    model_dir: Path, tmp_path: Path, run, name: str, breaker, words: str
) -> None:
    broken = broken_copy(model_dir, tmp_path / "broken", breaker)
    where = expected_path(broken, name)
    with pytest.raises(ModelDirError) as loaded:
        Recommender.load(broken)
    message = str(loaded.value)
    assert where in message and words in message, message
    with pytest.raises(ModelDirError) as served:
        ServedModel(broken)
    assert str(served.value) == message
    result = run("recommend", "--model-dir", broken, "--user", "1")
    assert result.code == 1 and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], result.err


def test_a_crafted_state_runs_no_code(model_dir: Path, tmp_path: Path) -> None:
    """``state.pt`` is a pickle inside a zip: one whose unpickling would call a function
    is refused by name, and the function never runs."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (Path.touch, (marker,))

    broken = broken_copy(model_dir, tmp_path / "crafted", lambda d: None)
    torch.save({"n_items": Payload()}, broken / "state.pt")
    with pytest.raises(ModelDirError, match="state.pt: truncated or not a parameter file"):
        Recommender.load(broken)
    assert not marker.exists()


def test_the_saved_directory_loads_and_scores_as_the_model(model_dir: Path) -> None:
    """The checks pass on what ``save`` writes, and the loaded model scores the same."""
    model = Recommender.load(model_dir)
    again = Recommender.load(model_dir)
    dataset = model.fitted_dataset()
    histories = dataset.histories.take(np.arange(10))
    assert torch.equal(model.score(histories), again.score(histories))
    assert ServedModel(model_dir).n_items == dataset.n_items


# --------------------------------------------------------------------------- item index


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_a_broken_item_index_file_is_named(model_dir: Path, tmp_path: Path, kind: str) -> None:
    directory = broken_copy(model_dir, tmp_path / "indexed", lambda d: None)
    vectors = Recommender.load(directory).item_vectors()
    config = {"kind": kind, "nlist": 2}
    load_or_build_index(directory, vectors, config)
    (index_file,) = directory.glob("item-index-*.faiss")
    good = index_file.read_bytes()
    assert load_or_build_index(directory, vectors, config).n_items == len(vectors)

    other = np.random.default_rng(0).normal(size=vectors.shape).astype(np.float32)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    load_or_build_index(other_dir, other, config)
    (other_file,) = other_dir.glob("item-index-*.faiss")
    variants = {
        "truncated": good[: len(good) // 2],
        "garbage": b"\x00" * 64,
        "empty": b"",
        "other vectors": other_file.read_bytes(),
    }
    for variant, content in variants.items():
        index_file.write_bytes(content)
        with pytest.raises(ModelDirError) as error:
            load_or_build_index(directory, vectors, config)
        assert str(index_file) in str(error.value), (variant, str(error.value))
    index_file.write_bytes(good)
    assert load_or_build_index(directory, vectors, config).n_items == len(vectors)


# --------------------------------------------------------------------------- watcher

WATCHED = ["yaml-syntax", "manifest-array", "events-truncated", "state-empty", "state-shape"]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the watcher did not get there"
        time.sleep(0.02)


def test_the_watcher_outlives_every_broken_version_and_swaps_in_the_next_good_one(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = tmp_path / "current"
    point(link, model_dir)
    store = EventStore(f"sqlite:///{tmp_path / 'events.db'}")
    service = Service(link, store)
    watcher = ModelWatcher(service, link, interval=0.02).start()
    served = service.current.version
    client = TestClient(create_app(service))
    cases = {case: (name, breaker) for case, name, breaker, _ in CASES}
    try:
        with caplog.at_level(logging.WARNING, logger="evorec.serving.watch"):
            for case in WATCHED:
                name, breaker = cases[case]
                broken = broken_copy(model_dir, tmp_path / case, breaker)
                where = expected_path(broken, name)
                point(link, broken)
                wait_for(lambda where=where: where in (service.watch_error or ""))
                polls = watcher.polls
                wait_for(lambda polls=polls: watcher.polls >= polls + 3)
                assert watcher.alive and service.current.version == served
                assert watcher.error == service.watch_error
                health = client.get("/health").json()
                assert health["model_update"] == "failing", health
                assert where in health["model_update_error"]
                warnings = [r for r in caplog.records if where in r.getMessage()]
                assert len(warnings) == 1  # once per failed version, not once per poll

            link.unlink()  # a link to nowhere, for good
            wait_for(lambda: "no model directory" in (service.watch_error or ""))
            assert watcher.alive and service.current.version == served

            fixed = retrained_copy(model_dir, tmp_path / "fixed")
            point(link, fixed)
            # the error is cleared just after the swap, in the watcher's thread
            wait_for(
                lambda: (
                    service.current.version == model_version(fixed) and service.watch_error is None
                )
            )
            assert watcher.alive
            assert watcher.error is None and service.watch_error is None
            health = client.get("/health").json()
            assert health["model_update"] == "ok" and health["model_update_error"] is None
    finally:
        watcher.stop()
        store.close()


# --------------------------------------------------------------------------- real process


def test_recommend_on_a_broken_directory_in_a_real_process(model_dir: Path, tmp_path: Path) -> None:
    broken = broken_copy(model_dir, tmp_path / "broken", truncate("dataset/events.parquet"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evorec.cli.main",
            "recommend",
            "--model-dir",
            broken,
            "--user",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "60", "NO_COLOR": "1"},
    )
    err = ANSI.sub("", result.stderr)
    assert result.returncode == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(broken / "dataset" / "events.parquet") in lines[0], err


def test_evaluate_names_an_invalid_run_config(model_dir: Path, tmp_path: Path, run) -> None:
    broken = broken_copy(
        model_dir, tmp_path / "broken", manifest(lambda m: {**m, "run_config": {"model": 5}})
    )
    result = run("evaluate", "--model-dir", broken)
    assert result.code == 1 and "Traceback" not in result.err
    assert str(broken / "evorec-model.json") in result.err and "run_config" in result.err
