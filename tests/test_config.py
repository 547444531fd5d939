"""Run configuration: YAML file, base values and key=value overrides."""

from __future__ import annotations

import copy

import pytest

from evorec.config import RunConfig, apply_override, load_run_config
from evorec.errors import ConfigError

YAML = """\
data:
  path: events.csv
  preprocess:
    min_item_events: 2
model:
  name: gru4rec
  lr: 0.001
  dim: 32
evaluation:
  ks: [1, 10]
"""


@pytest.fixture
def config_file(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text(YAML)
    return f


def test_defaults():
    cfg = load_run_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.model_name == "sasrec"
    assert cfg.data.split.method == "leave-one-out"
    assert cfg.data.preprocess.min_user_events == 5
    assert cfg.evaluation.filter_seen is None  # as the split says


def test_file_and_overrides(config_file):
    cfg = load_run_config(config_file, ["model.lr=0.002", "data.preprocess.min_user_events=3"])
    assert cfg.model_name == "gru4rec"
    assert cfg.model_params == {"lr": 0.002, "dim": 32}
    assert isinstance(cfg.model["lr"], float)
    assert cfg.data.path == "events.csv"
    # the nested override joins the file's section instead of replacing it
    assert cfg.data.preprocess.min_user_events == 3
    assert cfg.data.preprocess.min_item_events == 2
    assert cfg.data.preprocess.drop_duplicates is True  # default kept
    assert cfg.evaluation.ks == [1, 10]


def test_override_values_are_yaml(config_file):
    cfg = load_run_config(
        config_file,
        [
            "evaluation.ks=[5, 20]",
            "evaluation.filter_seen=false",
            "data.columns={user_id: uid}",
            "data.split.test_time=1700000000",
            "model.name=ease",
        ],
    )
    assert cfg.evaluation.ks == [5, 20]
    assert cfg.evaluation.filter_seen is False
    assert cfg.data.columns == {"user_id": "uid"}
    assert cfg.data.split.test_time == 1_700_000_000
    assert cfg.model_name == "ease"


def test_precedence_base_then_file_then_overrides(config_file):
    base = {"data": {"path": "base.csv", "format": "tsv"}, "model": {"epochs": 7}}
    snapshot = copy.deepcopy(base)
    cfg = load_run_config(config_file, ["data.format=csv"], base)
    assert cfg.data.path == "events.csv"  # the file beats base
    assert cfg.data.format == "csv"  # the override beats base
    assert cfg.model["epochs"] == 7  # base survives where the file is silent
    assert cfg.model["dim"] == 32
    assert base == snapshot  # the caller's dictionary is left alone


def test_empty_file_gives_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    assert load_run_config(f) == RunConfig()


def test_bad_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model: [unclosed\n  name: x\n")
    with pytest.raises(ConfigError, match="invalid YAML") as err:
        load_run_config(f)
    assert str(f) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_file(tmp_path, text):
    f = tmp_path / "list.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="mapping"):
        load_run_config(f)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("data:\n  bogus: 1\n", "data.bogus"),
        ("data:\n  preprocess:\n    min_user_evnts: 3\n", "data.preprocess.min_user_evnts"),
        ("training:\n  epochs: 3\n", "training"),
        ("evaluation:\n  filter_seen: maybe\n", "evaluation.filter_seen"),
        ("data:\n  split:\n    method: random\n", "data.split.method"),
    ],
)
def test_invalid_fields_are_named(tmp_path, text, field):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_run_config(f)
    assert f"'{field}'" in str(err.value)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("data.preprocess.min_user_events=0", "data.preprocess.min_user_events"),
        ("data.split.test_quantile=1.5", "data.split.test_quantile"),
        ("data.on_bad_rows=ignore", "data.on_bad_rows"),
        ("evaluation.nope=1", "evaluation.nope"),
    ],
)
def test_invalid_overrides_are_named(override, field):
    with pytest.raises(ConfigError) as err:
        load_run_config(None, [override])
    assert f"'{field}'" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.lr"], "key=value"),
        (["=3"], "empty key"),
        (["model.name=x", "model.name.sub=1"], "'name' is not a section"),
        (["model.lr=[1, 2"], "unreadable value"),
    ],
)
def test_malformed_overrides(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(None, overrides)


def test_apply_override_creates_sections():
    values: dict = {}
    apply_override(values, "a.b.c=3")
    apply_override(values, " a.b.d = x y ")
    assert values == {"a": {"b": {"c": 3, "d": "x y"}}}
