"""``evorec bench``: several seeds per model, mean and spread of every metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evorec.benchmarking.bench import aggregate_seeds, run_bench
from evorec.data.simulate import simulate


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = simulate(n_users=120, n_items=60, seed=3).save(tmp_path_factory.mktemp("bench"))
    return directory / "events.csv"


TINY = ["epochs=2", "dim=16", "max_len=20", "device=cpu"]


def test_seeds_give_mean_and_std(events_csv: Path, one_torch_thread: None) -> None:
    results = run_bench([str(events_csv)], ["pop", "sasrec"], overrides=TINY, seeds=[0, 1, 2])
    assert results["seeds"] == [0, 1, 2]
    assert "validation" in results["protocol"]["selection"]
    rows = results["datasets"][0]["models"]
    # a deterministic model shows no spread
    assert rows["pop"]["seeds"] == [0, 1, 2] and rows["pop"]["std"]["NDCG@10"] == 0
    sasrec = rows["sasrec"]
    assert [run["seed"] for run in sasrec["runs"]] == [0, 1, 2]
    assert [run["config"]["seed"] for run in sasrec["runs"]] == [0, 1, 2]
    per_seed = [run["NDCG@10"] for run in sasrec["runs"]]
    assert len(set(per_seed)) > 1  # the seeds really differ
    assert sasrec["NDCG@10"] == pytest.approx(np.mean(per_seed))
    assert sasrec["std"]["NDCG@10"] == pytest.approx(np.std(per_seed, ddof=1))
    assert sasrec["best_valid_ndcg10"] == pytest.approx(
        np.mean([run["best_valid_ndcg10"] for run in sasrec["runs"]])
    )


def test_aggregate_skips_missing_values() -> None:
    runs = [{"NDCG@10": 0.1, "t": 5.0, "config": {}}, {"NDCG@10": 0.3, "t": None, "config": {}}]
    row = aggregate_seeds(runs, [0, 1])
    assert row["NDCG@10"] == pytest.approx(0.2)
    assert row["t"] == 5.0 and row["std"]["t"] == 0.0


def test_cli_seeds_table(run, events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    sets = [arg for value in TINY for arg in ("--set", value)]
    result = run("bench", "--data", events_csv, "--models", "sasrec", "--seeds", "0,1",
                 *sets, "--out", out, "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    assert json.loads(out.read_text())["datasets"][0]["models"]["sasrec"]["seeds"] == [0, 1]
    assert " ± " in out.with_suffix(".md").read_text()
    bad = run("bench", "--data", events_csv, "--models", "sasrec", "--seeds", "0,x", "--out", out)
    assert bad.code != 0 and "--seeds" in bad.err
