"""``evorec train`` chooses the epochs on validation, then refits on every event."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from evorec.config import RunConfig
from evorec.data.load import from_frame
from evorec.errors import ModelDirError
from evorec.models.base import Recommender, read_manifest
from evorec.serving.engine import ServedModel
from evorec.training.pipeline import evaluate_model_dir, train


def wrap_events(n_users: int = 120, seed: int = 0) -> pl.DataFrame:
    """Runs of consecutive items (i is followed by i + 1). Half the users run up to 29 and
    then wrap to 0 as their last event: 29 is always a validation target and 29 -> 0 always
    a test target, so only a model that trains on each user's latest events learns them."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[int]] = {"user_id": [], "item_id": [], "timestamp": []}
    for user in range(n_users):
        if user % 2:
            items = list(range(int(rng.integers(15, 23)), 30)) + [0]
        else:
            start = int(rng.integers(0, 16))
            items = list(range(start, start + int(rng.integers(6, 12))))
        rows["user_id"] += [user] * len(items)
        rows["item_id"] += items
        rows["timestamp"] += list(range(len(items)))
    return pl.DataFrame(rows)


MODEL = {"name": "sasrec", "dim": 16, "max_len": 16, "epochs": 30, "patience": 30, "lr": 5e-3}
LOOSE = {"min_user_events": 1, "min_item_events": 1}


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refit") / "events.csv"
    wrap_events().write_csv(path)
    return path


def config(data_csv: Path) -> RunConfig:
    return RunConfig(data={"path": str(data_csv), "preprocess": LOOSE}, model=dict(MODEL))


def rank_after_29(model: Recommender) -> int:
    """Where the model ranks 0 after 26, 27, 28, 29."""
    ids = model.recommend(histories=[[26, 27, 28, 29]], k=30)["item_id"].to_list()
    return ids.index(0) if 0 in ids else 30


def test_refit_learns_the_latest_events(data_csv: Path, tmp_path: Path, one_torch_thread) -> None:
    dataset = from_frame(wrap_events(), preprocess_config=LOOSE)
    held_out = train(config(data_csv), tmp_path / "plain", dataset=dataset)
    refit = train(config(data_csv), tmp_path / "refit", dataset=dataset, refit=True)
    # the same selection run: the same held-out metrics
    assert refit.test.metrics == held_out.test.metrics
    assert rank_after_29(refit.model) == 0
    assert rank_after_29(held_out.model) > 0
    # what is saved and served is the refit model
    served = ServedModel(tmp_path / "refit")
    assert rank_after_29(served.model) == 0
    manifest = read_manifest(tmp_path / "refit")
    info = manifest["refit"]
    assert info["events"] == refit.split.full.n_events
    best_epoch = manifest["fit_info"]["best_epoch"]  # of the selection run
    assert info["settings"] == {"epochs": best_epoch}
    assert len(info["fit_info"]["history"]) == best_epoch
    assert "refit" not in read_manifest(tmp_path / "plain")
    # re-running the test on a refit model would score events it trained on
    with pytest.raises(ModelDirError, match="refit"):
        evaluate_model_dir(tmp_path / "refit")


def test_cli_refits_by_default(run, data_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    sets = ["--set", "epochs=3", "--set", "dim=16", "--set", "max_len=16"]
    sets += ["--set", "data.preprocess={min_user_events: 1, min_item_events: 1}"]
    result = run("train", "--data", data_csv, "--model", "sasrec", "--out", out, *sets)
    assert result.code == 0, result.err
    assert "refit on all" in result.out
    assert "refit" in read_manifest(out)
    evaluated = run("evaluate", "--model-dir", out, "--json", tmp_path / "e.json")
    assert evaluated.code == 0 and "before the refit" in " ".join(evaluated.out.split())
    held_out = json.loads((out / "metrics.json").read_text())
    assert json.loads((tmp_path / "e.json").read_text()) == held_out
    plain = tmp_path / "plain"
    result = run("train", "--data", data_csv, "--model", "sasrec", "--out", plain, "--no-refit",
                 *sets)  # fmt: skip
    assert result.code == 0 and "refit" not in read_manifest(plain)
