"""The ``evorec`` command line end to end, in subprocesses, as a user runs it.

Each command starts a fresh interpreter (a few seconds for torch), so models are trained
once per module and shared by the tests that read them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*m")
K = 5
# the installed console script (what users run), else the module
SCRIPT = Path(sys.executable).with_name("evorec")
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "evorec.cli.main"]


def evorec(
    *args: str | Path, timeout: float = 300, columns: int = 160
) -> subprocess.CompletedProcess:
    """Run ``evorec ARGS`` (``EVOREC_HOME`` comes from the conftest)."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    result = subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    result.stdout, result.stderr = ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)
    return result


def ok(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = evorec(*args, timeout=timeout)
    assert result.returncode == 0, f"evorec {' '.join(map(str, args))}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def simulated(work: Path) -> tuple[Path, str]:
    """``evorec data simulate``: 120 drifting users over 60 items."""
    out = work / "sim"
    result = ok("data", "simulate", "--out", out, "--users", "120", "--items", "60", "--seed", "3")
    return out, result.stdout


@pytest.fixture(scope="module")
def events_csv(simulated: tuple[Path, str], work: Path) -> Path:
    """The simulated events with string ids (``u7``, ``i12``): outputs must give them back."""
    events = pl.read_csv(simulated[0] / "events.csv")
    path = work / "events.csv"
    events.with_columns(
        ("u" + pl.col("user_id").cast(pl.String)).alias("user_id"),
        ("i" + pl.col("item_id").cast(pl.String)).alias("item_id"),
    ).write_csv(path)
    return path


@pytest.fixture(scope="module")
def seen(events_csv: Path) -> set[tuple[str, str]]:
    return set(pl.read_csv(events_csv).select("user_id", "item_id").iter_rows())


@pytest.fixture(scope="module")
def pop_dir(events_csv: Path, work: Path) -> Path:
    out = work / "pop"
    result = ok("train", "--data", events_csv, "--model", "pop", "--out", out, "--quiet")
    assert "preprocessing" in result.stdout and f"model saved to {out}" in result.stdout
    return out


@pytest.fixture(scope="module")
def sasrec_config(work: Path) -> Path:
    path = work / "sasrec.yaml"
    config = {
        "model": {"name": "sasrec", "dim": 16, "max_len": 20, "epochs": 5, "lr": 0.01},
        "evaluation": {"ks": [5, 10]},
    }
    path.write_text(yaml.safe_dump(config))
    return path


SASREC_SETS = ("--set", "epochs=2", "--set", "lr=0.005", "--set", "device=cpu")


@pytest.fixture(scope="module")
def sasrec_dir(events_csv: Path, sasrec_config: Path, work: Path) -> Path:
    """SASRec from a YAML config with ``--set`` overrides, 2 epochs, checkpointed."""
    out = work / "sasrec"
    ok(
        "train",
        "--data",
        events_csv,
        "--config",
        sasrec_config,
        *SASREC_SETS,
        "--out",
        out,
        "--quiet",
    )
    return out


def manifest(model_dir: Path) -> dict:
    return json.loads((model_dir / "evorec-model.json").read_text())


# --------------------------------------------------------------------------- data


def test_data_simulate(simulated: tuple[Path, str]) -> None:
    out, stdout = simulated
    assert {p.name for p in out.iterdir()} == {"events.csv", "items.csv", "truth.parquet"}
    events = pl.read_csv(out / "events.csv")
    assert events["user_id"].n_unique() == 120
    assert f"{events.height:,} events of 120 users written to" in stdout


def test_data_info(events_csv: Path) -> None:
    events = pl.read_csv(events_csv)
    stdout = ok("data", "info", "--data", events_csv).stdout
    assert re.search(rf"events\s*│\s*{events.height:,}\s", stdout)
    assert re.search(rf"users\s*│\s*{events['user_id'].n_unique():,}\s", stdout)
    assert re.search(rf"items\s*│\s*{events['item_id'].n_unique():,}\s", stdout)
    assert "time span" in stdout and "behaviors" in stdout


# --------------------------------------------------------------------------- train, evaluate


def test_train_writes_a_complete_model_dir(pop_dir: Path) -> None:
    names = {p.name for p in pop_dir.iterdir()}
    assert {"evorec-model.json", "config.yaml", "state.pt", "dataset"} <= names
    assert {"run.yaml", "metrics.json"} <= names
    assert not [n for n in os.listdir(pop_dir.parent) if n.startswith(".")]  # no temp dirs
    run = yaml.safe_load((pop_dir / "run.yaml").read_text())
    assert run["model"]["name"] == "pop"
    assert manifest(pop_dir)["test"] == json.loads((pop_dir / "metrics.json").read_text())


@pytest.mark.parametrize("model", ["pop", "sasrec"])
def test_evaluate_reproduces_saved_metrics(
    model: str, request: pytest.FixtureRequest, work: Path
) -> None:
    model_dir: Path = request.getfixturevalue(f"{model}_dir")
    out = work / f"eval-{model}.json"
    stdout = ok("evaluate", "--model-dir", model_dir, "--json", out).stdout
    assert "NDCG" in stdout
    saved = json.loads((model_dir / "metrics.json").read_text())
    again = json.loads(out.read_text())
    assert again.keys() == saved.keys()
    assert again.pop("ci95") == pytest.approx(saved.pop("ci95"), abs=1e-9)
    assert again == pytest.approx(saved, abs=1e-9)


def test_config_file_and_overrides_are_saved(sasrec_dir: Path) -> None:
    run = yaml.safe_load((sasrec_dir / "run.yaml").read_text())
    model = run["model"]
    assert model["name"] == "sasrec"
    assert model["epochs"] == 2 and model["lr"] == 0.005  # --set beats the file
    assert model["dim"] == 16 and model["max_len"] == 20  # from the file
    assert "dropout" in model  # the effective config: defaults filled in
    assert run["evaluation"]["ks"] == [5, 10]
    assert run["data"]["path"].endswith("events.csv")
    metrics = json.loads((sasrec_dir / "metrics.json").read_text())
    assert {"HR@5", "NDCG@10", "MRR@10"} <= metrics.keys() and "HR@20" not in metrics
    info = manifest(sasrec_dir)["fit_info"]
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert (sasrec_dir / "checkpoint.pt").is_file()  # kept by the final save, for --resume


def test_resume_continues_a_finished_run(
    sasrec_dir: Path, events_csv: Path, sasrec_config: Path, work: Path
) -> None:
    out = work / "sasrec-resumed"
    shutil.copytree(sasrec_dir, out)
    before = manifest(out)["fit_info"]["history"]
    result = ok(
        "train",
        "--data",
        events_csv,
        "--config",
        sasrec_config,
        *SASREC_SETS,
        "--set",
        "epochs=3",
        "--out",
        out,
        "--resume",
        "--quiet",
    )
    assert "note:" not in result.stderr
    info = manifest(out)["fit_info"]
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3]
    assert info["history"][:2] == before  # continued from the checkpoint, not retrained
    assert info["epochs"] == 3
    assert info["history"][2]["train_seconds"] > before[1]["train_seconds"]
    assert yaml.safe_load((out / "run.yaml").read_text())["model"]["epochs"] == 3
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 3


# --------------------------------------------------------------------------- recommend


def test_recommend_prints_top_k(pop_dir: Path) -> None:
    stdout = ok("recommend", "--model-dir", pop_dir, "--user", "u7", "-k", str(K)).stdout
    rows = [line for line in stdout.splitlines() if re.match(r"^│\s*u7\s*│", line)]
    assert len(rows) == K
    ranks = [int(line.strip("│ ").split("│")[-1]) for line in rows]
    assert ranks == list(range(1, K + 1))
    assert all(re.search(r"│\s*i\d+\s*│", line) for line in rows)


@pytest.mark.parametrize("model,suffix", [("pop", ".csv"), ("sasrec", ".parquet")])
def test_recommend_users_file_to_file(
    model: str,
    suffix: str,
    request: pytest.FixtureRequest,
    work: Path,
    seen: set[tuple[str, str]],
) -> None:
    model_dir: Path = request.getfixturevalue(f"{model}_dir")
    users = ["u1", "u42", "u100"]
    users_file = work / f"users-{model}.csv"
    users_file.write_text("user_id\n" + "\n".join(users) + "\n")
    out = work / f"recs-{model}{suffix}"
    stdout = ok(
        "recommend", "--model-dir", model_dir, "--users", users_file, "-k", str(K), "--out", out
    ).stdout
    assert f"{K * len(users)} recommendations for {len(users)} users written to" in stdout
    recs = pl.read_parquet(out) if suffix == ".parquet" else pl.read_csv(out)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs.schema["user_id"] == pl.String and recs.schema["item_id"] == pl.String
    assert recs.height == K * len(users)
    assert recs["user_id"].unique(maintain_order=True).to_list() == users
    for user in users:
        mine = recs.filter(pl.col("user_id") == user)
        assert mine["rank"].to_list() == list(range(1, K + 1))
        assert mine["score"].is_sorted(descending=True)
        assert mine["item_id"].n_unique() == K
    assert recs["item_id"].str.contains(r"^i\d+$").all()  # the original ids
    assert not [pair for pair in recs.select("user_id", "item_id").iter_rows() if pair in seen]


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed command."""
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("suffix", [".xlsx", ""])
def test_recommend_refuses_an_output_format_it_cannot_write(
    pop_dir: Path, work: Path, suffix: str
) -> None:
    out = work / f"recs{suffix}"
    # an unknown user would fail later: the output is checked before any work
    line = error_line(evorec("recommend", "--model-dir", pop_dir, "--user", "nobody", "--out", out))
    assert f"--out {out}" in line and ".csv, .tsv, .parquet, .jsonl, .json" in line
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".json"])
def test_recommend_writes_the_format_of_the_extension(
    pop_dir: Path, work: Path, suffix: str
) -> None:
    out = work / f"recs-u7{suffix}"
    ok("recommend", "--model-dir", pop_dir, "--user", "u7", "-k", str(K), "--out", out)
    readers = {".tsv": lambda p: pl.read_csv(p, separator="\t"), ".jsonl": pl.read_ndjson}
    recs = readers.get(suffix, pl.read_json)(out)
    assert recs.columns == ["user_id", "item_id", "score", "rank"]
    assert recs["user_id"].to_list() == ["u7"] * K and recs["rank"].to_list() == [*range(1, K + 1)]


def test_train_reads_a_latin1_log_only_with_its_encoding(work: Path) -> None:
    """Ids that differ only by a non-ASCII letter stay apart; without --encoding the file
    fails, naming its line, instead of merging them."""
    items = ["café", "cafè", "thé", "the"]
    rows = [f"u{u},{item},{100 * u + i}" for u in range(6) for i, item in enumerate(items)]
    data = work / "latin.csv"
    data.write_bytes(("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n").encode("latin-1"))
    sets = [
        "--set",
        "data.preprocess.min_user_events=1",
        "--set",
        "data.preprocess.min_item_events=1",
    ]
    out = work / "pop-latin"
    line = error_line(evorec("train", "--data", data, "--model", "pop", "--out", out, *sets))
    assert f"{data}:2: not valid utf-8" in line and "--encoding latin-1" in line
    assert not out.exists()
    ok("train", "--data", data, "--encoding", "latin-1", "--model", "pop", "--out", out, *sets)
    assert yaml.safe_load((out / "run.yaml").read_text())["data"]["encoding"] == "latin-1"
    recs = work / "recs-latin.csv"
    ok("recommend", "--model-dir", out, "--user", "u0", "--include-seen", "-k", "4", "--out", recs)
    assert sorted(pl.read_csv(recs)["item_id"]) == sorted(items)
    info = ok("data", "info", "--data", data, "--encoding", "latin-1").stdout
    assert re.search(r"items\s*│\s*4\s", info)


# --------------------------------------------------------------------------- bench, demo


def test_bench_json_and_markdown(events_csv: Path, work: Path) -> None:
    out = work / "bench" / "results.json"
    ok(
        "bench",
        "--data",
        events_csv,
        "--models",
        "pop,sasrec",
        "--set",
        "epochs=1",
        "--set",
        "dim=16",
        "--set",
        "max_len=20",
        "--set",
        "device=cpu",
        "--out",
        out,
        "--quiet",
    )
    results = json.loads(out.read_text())
    assert "split" in results["protocol"] and "ranking" in results["protocol"]
    (entry,) = results["datasets"]
    stats = entry["stats"]
    events = pl.read_csv(events_csv)
    assert stats["users"] == events["user_id"].n_unique()
    assert stats["events"] == events.height and stats["items"] > 0
    assert set(entry["models"]) == {"pop", "sasrec"}
    for name, row in entry["models"].items():
        for key in ("HR@10", "NDCG@10", "MRR@10", "train_seconds", "eval_seconds"):
            assert isinstance(row[key], float) and row[key] >= 0, (name, key)
        assert 0 <= row["NDCG@10"] <= row["HR@10"] <= 1
    assert entry["models"]["sasrec"]["best_epoch"] == 1
    assert entry["models"]["sasrec"]["config"]["dim"] == 16
    table = out.with_suffix(".md").read_text()
    assert table.startswith("| dataset | seen | model | HR@10 | NDCG@10 | MRR@10")
    seen = "filtered" if entry["filter_seen"] else "kept"
    assert f"| events | {seen} | pop |" in table and f"| events | {seen} | sasrec |" in table


@pytest.mark.slow
def test_demo(work: Path) -> None:
    out = work / "demo"
    stdout = ok("demo", "--out", out, "--epochs", "1", "--users", "300", timeout=600).stdout
    assert "test metrics" in stdout and "share of top-10" in stdout
    for name in ("pop", "ease", "gru4rec", "sasrec"):
        assert re.search(rf"│\s*{name}\s*│\s*\d\.\d{{4}}", stdout), name
    assert (out / "data" / "events.csv").is_file()
    assert manifest(out / "model")["model"] == "sasrec"


def test_recommend_all_users_streams_batches_equal_to_one_call(
    sasrec_dir: Path, work: Path
) -> None:
    """--all-users in batches of 7 users writes what one in-memory call returns."""
    from evorec.models.base import Recommender

    out = work / "recs-all.parquet"
    stdout = ok(
        "recommend",
        "--model-dir",
        sasrec_dir,
        "--all-users",
        "--batch-users",
        "7",
        "-k",
        str(K),
        "--out",
        out,
        "--quiet",
    ).stdout
    model = Recommender.load(sasrec_dir)
    users = model.fitted_dataset().user_ids
    expected = model.recommend(users, k=K)
    assert f"{expected.height} recommendations for {len(users)} users written to" in stdout
    streamed = pl.read_parquet(out)
    assert streamed.drop("score").equals(expected.drop("score"))
    assert (streamed["score"] - expected["score"]).abs().max() < 1e-5


@pytest.mark.parametrize(
    "args",
    [["--all-users"], ["--all-users", "--user", "u1", "--out", "x.csv"], []],
)
def test_recommend_all_users_needs_out_and_no_ids(pop_dir: Path, args: list[str]) -> None:
    line = error_line(evorec("recommend", "--model-dir", pop_dir, *args))
    assert "--all-users" in line


def test_recommend_unknown_user_fails_before_writing(pop_dir: Path, work: Path) -> None:
    out = work / "recs-unknown.parquet"
    line = error_line(
        evorec(
            "recommend", "--model-dir", pop_dir, "--user", "u1", "--user", "nobody", "--out", out
        )
    )
    assert "nobody" in line and not out.exists()
