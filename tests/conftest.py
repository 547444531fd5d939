"""Shared fixtures: the real datasets folder, an isolated data home, one torch thread,
and ``run`` for in-process CLI calls."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from rich.console import Console
from sqlalchemy import create_engine, text

from evorec.cli import data_commands
from evorec.cli import main as cli
from evorec.modeldir import MANIFEST

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def missing(message: str) -> None:
    """Skip a real-data test whose data is absent; under ``CI=true`` fail it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI=true but {message}: the real-data tests must run")
    pytest.skip(message)


def shared_dataset(relative: str) -> Path:
    """``../shared/datasets/<relative>``, or :func:`missing` when it is absent."""
    path = DATASETS / relative
    if not path.exists():
        missing(f"shared dataset {relative} not available")
    return path


def retrained_copy(model_dir: Path, target: Path) -> Path:
    """A copy of ``model_dir`` with another manifest: a new, good version to swap in."""
    shutil.copytree(model_dir, target)
    manifest = target / MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "note": "retrained"}))
    return target


POSTGRES_ENV = "EVOREC_TEST_POSTGRES_URL"


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {POSTGRES_ENV} is not set: the PostgreSQL tests must run")
        pytest.skip(f"{POSTGRES_ENV} not set")
    return url


def fresh_postgres() -> str:
    """The test database, emptied of every store table."""
    url = postgres_url()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(
            text(
                "DROP TABLE IF EXISTS events, store_meta, schema_version, erased_users, "
                "idempotency_keys"
            )
        )
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``../shared/datasets`` (real public datasets, never copied into the repo)."""
    if not DATASETS.is_dir():
        missing(f"shared datasets not available at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session", autouse=True)
def _session_evorec_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary ``EVOREC_HOME`` for session- and module-scoped fixtures too."""
    home = tmp_path_factory.mktemp("evorec-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVOREC_HOME", str(home))
        yield home


@pytest.fixture(autouse=True)
def evorec_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own ``EVOREC_HOME``: caches never touch the user's home, and no
    test sees another's processed-data cache. Subprocesses inherit it."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("EVOREC_HOME", str(home))
    return home


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Train in-process with one torch thread: the tiny test models gain nothing from more,
    and on a busy machine extra intra-op threads only slow them down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``run(*args)``: the ``evorec`` entry point with ``args``, stdout 200 columns wide (so
    that report tables do not wrap) and stderr as the default 80."""
    monkeypatch.setattr(cli, "console", Console(width=200))
    monkeypatch.setattr(data_commands, "_out", Console(width=200))

    def invoke(*args: str | Path) -> Result:
        monkeypatch.setattr(sys, "argv", ["evorec", *map(str, args)])
        capsys.readouterr()
        code: int | str | None = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return Result(
            1 if isinstance(code, str) else int(code or 0), ANSI.sub("", out), ANSI.sub("", err)
        )

    return invoke
