"""Bad input at the command line: a non-zero exit, ONE ``error:`` line on stderr that names
the file, line or field, no traceback, and nothing half-written.

The commands run in-process through ``evorec.cli.main.main`` (the console script's entry
point, with its error handling) to keep the suite fast; an exception that escaped it would
fail the test. A few cases also run in a real subprocess, with a narrow terminal, to check
what a user sees.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ANSI, Result

from evorec.config import load_run_config
from evorec.data.simulate import simulate
from evorec.training.pipeline import train


def assert_error(result: Result, *needles: str) -> str:
    """One ``error:`` line naming every needle; returns it."""
    assert result.code != 0
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def events_text() -> str:
    """A small simulated log: ``user_id,item_id,timestamp,behavior``."""
    events = simulate(n_users=60, n_items=40, n_topics=4, seed=1).raw.events
    return events.select("user_id", "item_id", "timestamp", "behavior").write_csv()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, events_text: str) -> Path:
    """A trained MostPopular model directory (copy it before breaking it)."""
    work = tmp_path_factory.mktemp("model")
    data = work / "events.csv"
    data.write_text(events_text)
    config = load_run_config(base={"data": {"path": str(data)}, "model": {"name": "pop"}})
    train(config, work / "pop")
    return work / "pop"


@pytest.fixture
def events_csv(tmp_path: Path, events_text: str) -> Path:
    path = tmp_path / "events.csv"
    path.write_text(events_text)
    return path


@pytest.fixture
def broken_csv(tmp_path: Path, events_text: str) -> Path:
    """Bad lines 3 (unparseable timestamp), 7 (missing fields) and 11 (empty item)."""
    lines = events_text.splitlines()
    lines[2] = "1,5,yesterday,pv"
    lines[6] = "1,5"
    lines[10] = "2,,1684828251,pv"
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- data files


def test_dropped_rows_are_reported_by_line(run, broken_csv: Path, tmp_path: Path) -> None:
    for attempt in ("first", "cached"):  # the second run reads the processed-data cache
        result = run("train", "--data", broken_csv, "--model", "pop", "--out", tmp_path / attempt)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        report = next(line for line in result.out.splitlines() if "unparseable" in line)
        assert re.search(r"│\s*3\s*│.*lines 3, 7, 11", report), report  # 3 rows removed
        assert (tmp_path / attempt / "state.pt").is_file()
    assert "processed data from cache" in result.out


def test_bad_rows_as_errors_name_the_first_line(run, broken_csv: Path, tmp_path: Path) -> None:
    before = listing(tmp_path)
    result = run(
        "train",
        "--data",
        broken_csv,
        "--model",
        "pop",
        "--out",
        tmp_path / "m",
        "--set",
        "data.on_bad_rows=error",
    )
    assert_error(result, f"{broken_csv}:3", "timestamp", "yesterday")
    assert listing(tmp_path) == before


def test_empty_file(run, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run("train", "--data", empty, "--model", "pop", "--out", tmp_path / "m")
    assert_error(result, str(empty), "no events")
    assert listing(tmp_path) == {"empty.csv"}


def test_unknown_format(run, events_csv: Path, tmp_path: Path) -> None:
    result = run("train", "--data", events_csv, "--format", "xlsx", "--out", tmp_path / "m")
    assert_error(result, "unknown format 'xlsx'", "csv")
    assert listing(tmp_path) == {"events.csv"}
    assert_error(run("data", "info", "--data", events_csv, "--format", "xlsx"), "'xlsx'")


def test_non_numeric_timestamps(run, tmp_path: Path) -> None:
    path = tmp_path / "words.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,monday\n1,3,tuesday\n2,2,friday\n")
    result = run("train", "--data", path, "--model", "pop", "--out", tmp_path / "m")
    assert_error(result, f"{path}:2", "field 'timestamp'", "monday")
    assert listing(tmp_path) == {"words.csv"}


def test_missing_data_path(run, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "events.csv"
    result = run("train", "--data", missing, "--model", "pop", "--out", tmp_path / "m")
    assert_error(result, str(missing), "not found")
    assert_error(run("data", "info", "--data", missing), str(missing))
    assert listing(tmp_path) == set()


def test_missing_user_column(run, tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("a,b,c\n1,2,3\n")
    result = run("train", "--data", path, "--model", "pop", "--out", tmp_path / "m")
    assert_error(result, str(path), "user_id")


def test_no_data_path_at_all(run, tmp_path: Path) -> None:
    assert_error(run("train", "--model", "pop", "--out", tmp_path / "m"), "--data")


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "assignment,needles",
    [("epoch=1", ["sasrec", "epoch"]), ("lr=fast", ["lr", "number"])],
)
def test_bad_model_setting(
    run, events_csv: Path, tmp_path: Path, assignment: str, needles: list[str]
) -> None:
    """An unknown model field or a value of the wrong type."""
    result = run(
        "train",
        "--data",
        events_csv,
        "--model",
        "sasrec",
        "--set",
        assignment,
        "--out",
        tmp_path / "m",
    )
    assert_error(result, *needles)
    assert listing(tmp_path) == {"events.csv"}


@pytest.mark.parametrize(
    "assignment,needles",
    [
        ("data.min_events=3", ["data.min_events", "unknown field"]),
        ("data.on_bad_rows=sometimes", ["data.on_bad_rows"]),
        ("evaluation.ks=ten", ["evaluation.ks"]),
        ("epochs", ["'epochs'", "key=value"]),
        ("lr=[1", ["lr=[1", "unreadable value"]),
    ],
)
def test_invalid_overrides(run, events_csv: Path, tmp_path: Path, assignment, needles) -> None:
    result = run("train", "--data", events_csv, "--set", assignment, "--out", tmp_path / "m")
    assert_error(result, *needles)
    assert listing(tmp_path) == {"events.csv"}


def test_unknown_model(run, events_csv: Path, tmp_path: Path) -> None:
    result = run("train", "--data", events_csv, "--model", "nosuchrec", "--out", tmp_path / "m")
    assert_error(result, "unknown model 'nosuchrec'", "sasrec")


def test_bad_yaml_config(run, events_csv: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  name: sasrec\n  dim: [16,\ndata:\n  path: x\n")
    result = run("train", "--data", events_csv, "--config", config, "--out", tmp_path / "m")
    line = assert_error(result, str(config), "invalid YAML")
    assert re.search(r"line \d+, column \d+", line)
    assert listing(tmp_path) == {"events.csv", "run.yaml"}


def test_config_that_is_not_a_mapping(run, events_csv: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("- sasrec\n")
    result = run("train", "--data", events_csv, "--config", config, "--out", tmp_path / "m")
    assert_error(result, str(config), "mapping")


def test_missing_config_file(run, events_csv: Path, tmp_path: Path) -> None:
    config = tmp_path / "absent.yaml"
    result = run("train", "--data", events_csv, "--config", config, "--out", tmp_path / "m")
    assert_error(result, str(config), "not found")


def test_bench_unknown_override(run, events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run(
        "bench", "--data", events_csv, "--models", "pop,sasrec", "--set", "epoch=1", "--out", out
    )
    assert_error(result, "epoch")
    assert listing(tmp_path) == {"events.csv"}


def test_resume_without_checkpoint_says_so(run, events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = run("train", "--data", events_csv, "--model", "pop", "--out", out, "--resume")
    assert result.code == 0, result.err
    assert "note: --resume: no checkpoint.pt" in result.err
    assert (out / "state.pt").is_file()


# --------------------------------------------------------------------------- model dirs


def test_unknown_user(run, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.csv"
    result = run(
        "recommend", "--model-dir", model_dir, "--user", "1", "--user", "nobody", "--out", out
    )
    assert_error(result, "unknown user", "nobody")
    assert listing(tmp_path) == set()


def test_users_file_problems(run, model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "users.csv"
    empty.write_text("user_id\n")
    assert_error(run("recommend", "--model-dir", model_dir, "--users", empty), str(empty))
    missing = tmp_path / "absent.csv"
    assert_error(run("recommend", "--model-dir", model_dir, "--users", missing), str(missing))
    broken = tmp_path / "users.parquet"
    broken.write_text("not parquet")
    assert_error(run("recommend", "--model-dir", model_dir, "--users", broken), str(broken))


def test_no_users_given(run, model_dir: Path) -> None:
    assert_error(run("recommend", "--model-dir", model_dir), "--user")


def test_model_dir_without_state(run, model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "state.pt").unlink()
    assert_error(run("evaluate", "--model-dir", broken), str(broken), "state.pt")
    out = tmp_path / "recs.csv"
    result = run("recommend", "--model-dir", broken, "--user", "1", "--out", out)
    assert_error(result, str(broken), "state.pt")
    assert not out.exists()


def test_corrupt_state(run, model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    (broken / "state.pt").write_bytes(b"\x00not a torch file")
    assert_error(run("recommend", "--model-dir", broken, "--user", "1"), "state.pt")


def test_model_dir_of_another_format(run, model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    manifest_path = other / "evorec-model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(format=99, evorec_version="9.0.0")
    manifest_path.write_text(json.dumps(manifest))
    json_out = tmp_path / "metrics.json"
    result = run("evaluate", "--model-dir", other, "--json", json_out)
    assert_error(result, str(other), "format 99", "9.0.0")
    assert not json_out.exists()
    assert_error(run("recommend", "--model-dir", other, "--user", "1"), "format 99")


def test_not_a_model_dir(run, tmp_path: Path) -> None:
    assert_error(run("evaluate", "--model-dir", tmp_path / "nothing"), "nothing", "not found")


# --------------------------------------------------------------------------- real processes


def evorec_process(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """The installed entry point in a subprocess, in a terminal 60 columns wide."""
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "evorec.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_errors_in_a_real_process(tmp_path: Path) -> None:
    """A data error and a config error: exit 1, one line on stderr even when it is longer
    than the terminal is wide, and no traceback."""
    data = tmp_path / "words.csv"
    data.write_text("user_id,item_id,timestamp\n1,2,monday\n")
    config = tmp_path / "bad.yaml"
    config.write_text("model: [\n")
    for args, needle in (
        (["train", "--data", data, "--model", "pop", "--out", tmp_path / "m"], "words.csv:2"),
        (["train", "--data", data, "--config", config, "--out", tmp_path / "m"], "bad.yaml"),
    ):
        result = evorec_process(*args, cwd=tmp_path)
        assert result.returncode == 1
        err = ANSI.sub("", result.stderr)
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
        assert len(lines[0]) > 60
    assert listing(tmp_path) == {"words.csv", "bad.yaml"}


def test_resume_from_an_incompatible_checkpoint(
    run, events_csv: Path, tmp_path: Path, one_torch_thread
) -> None:
    out = tmp_path / "m"
    tiny = ["--set", "epochs=1", "--set", "max_len=10", "--set", "device=cpu", "--quiet"]
    first = run(
        "train", "--data", events_csv, "--model", "sasrec", "--set", "dim=8", *tiny, "--out", out
    )
    assert first.code == 0, first.err
    state = (out / "state.pt").read_bytes()
    result = run(
        "train",
        "--data",
        events_csv,
        "--model",
        "sasrec",
        "--set",
        "dim=16",
        *tiny,
        "--out",
        out,
        "--resume",
    )
    assert_error(result, str(out / "checkpoint.pt"), "cannot resume")
    assert (out / "state.pt").read_bytes() == state  # the trained model is left as it was
