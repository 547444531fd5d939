"""Evaluation on a random sample of the test users, with 95% confidence intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evorec.data.load import load_dataset
from evorec.data.simulate import simulate
from evorec.data.split import EvalSet, Split, leave_one_out
from evorec.errors import ConfigError
from evorec.evaluation.evaluator import ci_half_width, evaluate, sample_rows
from evorec.models import get_model_class
from evorec.models.base import Recommender

SAMPLE = 40


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = simulate(n_users=120, n_items=60, seed=3).save(tmp_path_factory.mktemp("sim"))
    return directory / "events.csv"


@pytest.fixture(scope="module")
def split(events_csv: Path) -> Split:
    return leave_one_out(load_dataset(events_csv, "auto"))


@pytest.fixture(scope="module")
def pop(split: Split) -> Recommender:
    """Popularity scores tie on items with the same count: tie-breaking decides ranks."""
    model = get_model_class("pop")({})
    model.fit(split)
    return model


def test_sample_is_the_full_evaluation_of_the_same_rows(pop: Recommender, split: Split) -> None:
    test: EvalSet = split.test
    full = evaluate(pop, test)
    sampled = evaluate(pop, test, users=SAMPLE, seed=7)
    rows = sample_rows(len(test), SAMPLE, 7)
    assert len(np.unique(rows)) == SAMPLE and (np.diff(rows) > 0).all()
    assert sampled.users == SAMPLE and sampled.population == len(test) and sampled.sampled
    assert set(sampled.per_user) == set(full.per_user)
    for name, values in sampled.per_user.items():
        np.testing.assert_array_equal(values, full.per_user[name][rows])
        if name in sampled.metrics:
            assert sampled.metrics[name] == float(full.per_user[name][rows].mean())
    # evaluated as rows of their own (ties keyed by their position in the subset), the same
    # users rank differently: the fixture's ties are real, the original positions matter
    alone = evaluate(pop, test.subset(rows))
    assert any(
        not np.array_equal(alone.per_user[name], sampled.per_user[name]) for name in alone.per_user
    )


def test_ci_half_width_is_the_finite_population_interval(pop: Recommender, split: Split) -> None:
    population = len(split.test)
    result = evaluate(pop, split.test, users=SAMPLE, seed=1)
    assert set(result.ci95) == {name for name in result.metrics if name != "Coverage@10"}
    correction = np.sqrt((population - SAMPLE) / (population - 1))
    for name, half_width in result.ci95.items():
        values = result.per_user[name]
        expected = 1.96 * np.std(values, ddof=1) / np.sqrt(SAMPLE) * correction
        assert half_width == pytest.approx(expected, rel=1e-12)
    assert result.ci95["NDCG@10"] > 0
    saved = result.to_dict()
    assert saved["users"] == SAMPLE and saved["population"] == population
    assert saved["ci95"] == result.ci95 and saved["NDCG@10"] == result.metrics["NDCG@10"]


def test_whole_population_has_no_interval_and_the_same_metrics(
    pop: Recommender, split: Split
) -> None:
    population = len(split.test)
    full = evaluate(pop, split.test)
    assert full.users == full.population == population and not full.sampled
    assert full.ci95 and all(value == 0.0 for value in full.ci95.values())
    for users in (population, population + 5):
        same = evaluate(pop, split.test, users=users, seed=9)
        assert same.metrics == full.metrics and same.ci95 == full.ci95
        assert same.users == population


def test_interval_covers_the_population_mean_in_most_samples() -> None:
    rng = np.random.default_rng(0)
    per_user = (rng.random(2000) < 0.1).astype(float)  # hits of 2,000 users
    truth = per_user.mean()
    covered = 0
    for seed in range(50):
        sample = per_user[sample_rows(len(per_user), 200, seed)]
        covered += abs(sample.mean() - truth) <= ci_half_width(sample, len(per_user))
    assert 40 <= covered <= 50  # 95% nominal: 47.5 expected


def test_too_few_users_is_a_config_error(pop: Recommender, split: Split) -> None:
    for users in (1, 0, -3):
        with pytest.raises(ConfigError, match="users"):
            evaluate(pop, split.test, users=users)


def test_train_with_sampled_evaluation(run, events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "pop"
    args = ("train", "--data", events_csv, "--model", "pop", "--quiet")
    result = run(*args, "--set", "evaluation.users=30", "--out", out)
    assert result.code == 0, result.err
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["users"] == 30 and saved["population"] == 120
    assert saved["ci95"]["NDCG@10"] > 0 and "NDCG@10" in saved
    printed = " ".join(result.out.split())  # the table title wraps at the table's width
    assert "30 of 120 users (95% CI)" in printed and " ± " in printed
    # the refit model shows the held-out (sampled) metrics
    shown = run("evaluate", "--model-dir", out)
    assert shown.code == 0, shown.err
    printed = " ".join(shown.out.split())
    assert f"{saved['NDCG@10']:.4f} ± {saved['ci95']['NDCG@10']:.4f}" in printed
    assert "30 of 120 users (95% CI)" in printed
    # without a refit the saved model is re-evaluated on the same sample
    kept = tmp_path / "kept"
    assert run(*args, "--set", "evaluation.users=30", "--no-refit", "--out", kept).code == 0
    again = tmp_path / "again.json"
    rerun = run("evaluate", "--model-dir", kept, "--json", again)
    assert rerun.code == 0 and "30 of 120 users (95% CI)" in " ".join(rerun.out.split())
    assert json.loads(again.read_text()) == json.loads((kept / "metrics.json").read_text())
    bad = run(*args, "--set", "evaluation.users=0", "--out", tmp_path / "bad")
    assert bad.code != 0 and "evaluation.users" in bad.err and "Traceback" not in bad.err


def test_bench_with_eval_users(run, events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    args = ("bench", "--data", events_csv, "--models", "pop", "--out", out, "--quiet")
    result = run(*args, "--eval-users", "30", "--seeds", "0,1")
    assert result.code == 0, result.err
    results = json.loads(out.read_text())
    assert "30 users" in results["protocol"]["test_users"]
    row = results["datasets"][0]["models"]["pop"]
    assert row["test_users"] == 30 and row["test_population"] == 120
    assert row["ci95"]["NDCG@10"] > 0
    assert all(run["ci95"] == row["ci95"] for run in row["runs"])  # pop: the same every seed
    table = out.with_suffix(".md").read_text()
    assert table.startswith("events: test on 30 of 120 users (95% CI)\n")
    assert "| test users | NDCG@10 95% CI |" in table
    assert f"| 30 of 120 | ± {row['ci95']['NDCG@10']:.4f} |" in table
    bad = run(*args, "--eval-users", "0")
    assert bad.code != 0 and "--eval-users" in bad.err and "Traceback" not in bad.err


def test_bench_on_every_user_has_no_interval_column(run, events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = run("bench", "--data", events_csv, "--models", "pop", "--out", out, "--quiet")
    assert result.code == 0, result.err
    row = json.loads(out.read_text())["datasets"][0]["models"]["pop"]
    assert row["test_users"] == row["test_population"] == 120
    assert all(value == 0.0 for value in row["ci95"].values())
    table = out.with_suffix(".md").read_text()
    assert table.startswith("| dataset | seen | model |") and "95% CI" not in table
