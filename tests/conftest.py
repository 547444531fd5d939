"""Shared fixtures: the real datasets folder, an isolated data home, one torch thread."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """``../shared/datasets`` (real public datasets, never copied into the repo)."""
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets not available at {DATASETS}")
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


class _OneCpuOs:
    """``os`` as the trainer sees it, reporting one CPU (see ``one_torch_thread``)."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def cpu_count() -> int:
        return 1


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Train with one torch thread: on a few shared, busy cores two intra-op threads make
    training several times slower. (The trainer raises torch's thread count to
    ``os.cpu_count()``, hence the ``os`` it sees is patched.)"""
    from evorec.training import trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(trainer, "os", _OneCpuOs(), raising=False)
    yield
    torch.set_num_threads(threads)
