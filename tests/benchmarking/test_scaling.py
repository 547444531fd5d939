"""The model-size sweep: sizes parsed, FLOPs counted, results and plot written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evorec.benchmarking.scaling import parse_size, run_sweep
from evorec.errors import ConfigError


def test_parse_size():
    assert parse_size("dim=64, layers=2") == {"dim": 64, "layers": 2}
    with pytest.raises(ConfigError, match="key=value"):
        parse_size("dim=64,layers")
    with pytest.raises(ConfigError, match="empty"):
        parse_size(" , ")


@pytest.mark.slow
def test_sweep_counts_more_flops_for_bigger_models(datasets_dir: Path, one_torch_thread):
    results = run_sweep(
        str(datasets_dir / "amazon-s3rec" / "LastFM.txt"),
        "hstu",
        [{"dim": 8, "layers": 1}, {"dim": 16, "layers": 2}],
        overrides=["epochs=1", "max_len=20", "valid_users=50"],
    )
    small, big = results["runs"]
    assert big["parameters"] > small["parameters"] > 0
    # the output layer alone costs 3 * 2 * dim * n_items per scored position
    n_items = results["stats"]["items"]
    assert small["flops_per_position"] >= 6 * 8 * n_items
    assert big["flops_per_position"] > 2 * small["flops_per_position"] * 0.9
    assert big["training_flops"] > small["training_flops"]
    assert 0 <= small["NDCG@10"] <= 1


def test_sweep_cli_writes_json_table_and_plot(run, datasets_dir: Path, tmp_path: Path):
    out = tmp_path / "sweep.json"
    result = run(
        "sweep",
        "--data",
        datasets_dir / "amazon-s3rec" / "LastFM.txt",
        "--model",
        "sasrec",
        "--size",
        "dim=8",
        "--size",
        "dim=16",
        "--set",
        "epochs=1",
        "--set",
        "max_len=10",
        "--out",
        out,
        "--quiet",
    )
    assert result.code == 0, result.err
    runs = json.loads(out.read_text())["runs"]
    assert [r["size"] for r in runs] == [{"dim": 8}, {"dim": 16}]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dim=16" in out.with_suffix(".md").read_text()


def test_sweep_rejects_unknown_size_fields_and_non_sequence_models(run, tmp_path: Path):
    result = run(
        "sweep",
        "--data",
        "x.csv",
        "--model",
        "hstu",
        "--size",
        "width=3",
        "--out",
        tmp_path / "s.json",
    )
    assert result.code == 1 and "width" in result.err
    result = run(
        "sweep",
        "--data",
        "x.csv",
        "--model",
        "ease",
        "--size",
        "l2=3",
        "--out",
        tmp_path / "s.json",
    )
    assert result.code == 1 and "sequence model" in result.err


def test_sweep_add_merges_sizes_and_refuses_other_settings(run, datasets_dir: Path, tmp_path: Path):
    out = tmp_path / "sweep.json"
    base = ["sweep", "--data", datasets_dir / "amazon-s3rec" / "LastFM.txt", "--model", "sasrec"]
    shared = ["--set", "epochs=1", "--set", "max_len=10", "--out", out, "--quiet"]
    assert run(*base, "--size", "dim=16", *shared).code == 0
    result = run(*base, "--size", "dim=8", *shared, "--add")
    assert result.code == 0, result.err
    runs = json.loads(out.read_text())["runs"]
    assert [r["size"] for r in runs] == [{"dim": 8}, {"dim": 16}]  # ordered by parameters
    assert "dim=8" in out.with_suffix(".md").read_text()
    other = run(*base, "--size", "dim=4", "--set", "epochs=2", *shared[2:], "--add")
    assert other.code != 0 and "overrides" in other.err
    assert len(json.loads(out.read_text())["runs"]) == 2
