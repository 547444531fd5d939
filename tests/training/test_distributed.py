"""Data-parallel training (PyTorch DDP, Gloo, 2 processes): the same steps as one process
on the global batch, the same quality on real data, a killed rank fails the run cleanly and
``--resume`` continues it, and ``update --nproc 2`` writes the version one process does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import shared_dataset

from evorec import load_model
from evorec.config import RunConfig
from evorec.data.dataset import Dataset
from evorec.data.load import from_frame
from evorec.data.preprocess import PreprocessConfig, preprocess
from evorec.data.simulate import simulate
from evorec.models import SASRec
from evorec.store import EventStore
from evorec.training.loop import load_checkpoint
from evorec.training.pipeline import train
from evorec.training.trainer import SequenceTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORLD = 2
# per case: model settings and the optimiser (SGD shows the gradients themselves; AdamW
# divides by their running scale, so rounding in near-zero gradients shows more)
CASES = {
    "softmax-sgd": ({"loss": "softmax", "accumulate": 1}, "sgd"),
    "sampled-accumulate-sgd": (
        {"loss": "sampled_softmax", "n_negatives": 16, "accumulate": 2},
        "sgd",
    ),
    "softmax-adamw": ({"loss": "softmax", "accumulate": 1}, "adamw"),
}
TOLERANCE = {"sgd": 1e-5, "adamw": 1e-3}


def tiny_events(users: int = 80, events: int = 12, items: int = 40) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), events),
            "item_id": rng.integers(items, size=users * events),
            "timestamp": np.tile(np.arange(events), users)
            + 1000 * np.repeat(np.arange(users), events),
        }
    )


def tiny_dataset() -> Dataset:
    loose = {"min_user_events": 1, "min_item_events": 1}
    return from_frame(tiny_events(), preprocess_config=loose)


def train_case(settings: dict, optimiser: str) -> dict[str, torch.Tensor]:
    """Two epochs of a tiny SASRec (no dropout: the same function on every rank); its
    parameters after them."""
    data = tiny_dataset()
    model = SASRec(dim=8, max_len=8, dropout=0.0, batch_size=24, epochs=2, device="cpu", **settings)
    model.seed_rngs()
    model.prepare(data, False)
    trainer = SequenceTrainer(model, data, None)
    if optimiser == "sgd":
        trainer.optimizer = torch.optim.SGD(trainer.module.parameters(), lr=0.5)
    trainer.run()
    return {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}


def _rank(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        results = {name: train_case(*case) for name, case in CASES.items()}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_ddp_steps_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_rank, args=(f"file://{tmp_path / 'init'}", str(out)), nprocs=WORLD, join=True)
    ddp = torch.load(out, weights_only=True)
    for name, (settings, optimiser) in CASES.items():
        single = train_case(settings, optimiser)
        for key, value in single.items():
            diff = (ddp[name][key] - value).abs().max().item()
            assert diff <= TOLERANCE[optimiser], f"{name} {key}: max difference {diff}"
        # a run that moved nothing would match too
        moved = max(
            (single[k] - init).abs().max().item()
            for k, init in _initial(settings).items()
            if k in single
        )
        assert moved > 10 * TOLERANCE[optimiser], f"{name}: training did not move the parameters"


def _initial(settings: dict) -> dict[str, torch.Tensor]:
    model = SASRec(dim=8, max_len=8, dropout=0.0, batch_size=24, epochs=1, device="cpu", **settings)
    model.seed_rngs()
    model.prepare(tiny_dataset(), False)
    return {k: v.detach().clone() for k, v in model.fitted_network().state_dict().items()}


# sparse_items: ~960 items of which the last windows (train_on last) and 16 negatives a
# batch reach about 600, so untouched rows show; the item table is held to the gradient
# tolerance (its rows get real gradients), the other parameters to AdamW's
SPARSE = {
    "loss": "sampled_softmax", "n_negatives": 16, "sparse_items": True, "train_on": "last",
}  # fmt: skip
SPARSE_CASES = {
    "sparse": {**SPARSE, "accumulate": 1},
    "sparse-accumulate": {**SPARSE, "accumulate": 2},
}
TABLE = "item_embedding.weight"
Steps = tuple[dict[str, torch.Tensor], list[torch.Tensor], list[torch.Tensor]]


def sparse_model(settings: dict) -> tuple[SASRec, Dataset]:
    loose = {"min_user_events": 1, "min_item_events": 1}
    data = from_frame(tiny_events(events=20, items=1500), preprocess_config=loose)
    model = SASRec(dim=8, max_len=8, dropout=0.0, batch_size=24, epochs=2, device="cpu", **settings)
    model.seed_rngs()
    model.prepare(data, False)
    return model, data


def train_sparse(settings: dict) -> Steps:
    """Two epochs of :func:`sparse_model` with its own optimiser (AdamW, SparseAdam on the
    item table): its parameters, and the rows and values of the item table's gradient at
    every optimiser step."""
    model, data = sparse_model(settings)
    trainer = SequenceTrainer(model, data, None)
    table = trainer.module.item_embedding.weight
    rows: list[torch.Tensor] = []
    values: list[torch.Tensor] = []

    def record(*_: object) -> None:
        assert table.grad is not None and table.grad.is_sparse
        grad = table.grad.coalesce()
        rows.append(grad.indices()[0].clone())
        values.append(grad.values().clone())

    trainer.optimizer.register_step_pre_hook(record)
    trainer.run()
    return {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}, rows, values


def _sparse_rank(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["LOCAL_RANK"] = str(rank)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=120)
    )
    try:
        results = {name: train_sparse(settings) for name, settings in SPARSE_CASES.items()}
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ddp_sparse_items_step_like_one_process_and_leave_untouched_rows(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_sparse_rank, args=(f"file://{tmp_path / 'init'}", str(out)), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(WORLD)]
    for name, settings in SPARSE_CASES.items():
        state, rows, values = train_sparse(settings)
        initial = sparse_model(settings)[0].fitted_network().item_embedding.weight.detach()
        untouched = torch.ones(len(initial), dtype=torch.bool)
        untouched[torch.cat(rows)] = False
        untouched[0] = False  # padding
        assert untouched.sum() > len(initial) // 4, f"{name}: the batches reached every row"
        for rank, ddp in enumerate(ranks):
            ddp_state, ddp_rows, ddp_values = ddp[name]
            # every step's gradient on the table: the single process's rows and values
            assert len(ddp_rows) == len(rows) >= 4, f"{name} rank {rank}"
            for step in range(len(rows)):
                assert torch.equal(ddp_rows[step], rows[step]), f"{name} rank {rank} step {step}"
                diff = (ddp_values[step] - values[step]).abs().max().item()
                assert diff <= TOLERANCE["sgd"], f"{name} rank {rank} step {step}: {diff}"
            for key, value in state.items():
                diff = (ddp_state[key] - value).abs().max().item()
                tolerance = TOLERANCE["sgd" if key == TABLE else "adamw"]
                assert diff <= tolerance, f"{name} rank {rank} {key}: max difference {diff}"
            # lazy Adam: rows no batch reached are the initial ones, on every rank alike
            assert torch.equal(ddp_state[TABLE][untouched], initial[untouched]), name
            assert torch.equal(ddp_state[TABLE], ranks[0][name][0][TABLE]), name
        moved = (state[TABLE] - initial).abs().max().item()
        assert moved > 10 * TOLERANCE["sgd"], f"{name}: training did not move the item rows"


def evorec(*args: str | Path | int) -> list[str]:
    return [sys.executable, "-m", "evorec", *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def fit_info(model_dir: Path) -> dict:
    return json.loads((model_dir / "evorec-model.json").read_text())["fit_info"]


def test_two_processes_reach_the_single_process_quality_on_movielens(tmp_path: Path) -> None:
    data = shared_dataset("ml-latest-small")
    settings = [
        "--set", "dim=32", "--set", "max_len=20", "--set", "train_on=last",
        "--set", "epochs=5", "--set", "patience=5", "--set", "batch_size=64",
        "--set", "lr=0.005", "--set", "device=cpu",
    ]  # fmt: skip
    best = {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        done = subprocess.run(
            evorec("train", "--data", data, "--model", "sasrec", "--out", out, *settings,
                   "--no-refit", "--quiet", "--nproc", nproc),
            env=_env(), capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        best[nproc] = fit_info(out)["best_valid"]["NDCG@10"]
    # the same steps on the same global batches; only the dropout masks differ
    assert best[1] > 0.01  # far above random ranking of ~9k items (about 0.0005)
    assert abs(best[2] - best[1]) <= 0.25 * best[1], best


def _ranks(launcher: int) -> dict[int, int]:
    """The rank processes of a ``--nproc`` launcher: rank -> pid."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"RANK="):
                ranks[int(entry[5:])] = pid
    return ranks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_a_killed_rank_fails_the_run_and_resume_continues(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    tiny_events().write_csv(csv)
    out = tmp_path / "model"
    common = [
        "train", "--data", csv, "--model", "sasrec", "--out", out, "--no-refit", "--quiet",
        "--nproc", "2", "--set", "dim=8", "--set", "max_len=8", "--set", "batch_size=16",
        "--set", "device=cpu", "--set", "patience=1000",
    ]  # fmt: skip
    run = subprocess.Popen(
        evorec(*common, "--set", "epochs=1000"),
        env=_env(EVOREC_DIST_TIMEOUT="60"),
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    ranks = _ranks(run.pid)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    _, err = run.communicate(timeout=120)  # no hang: the launcher stops the other rank
    assert run.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 of 2 was killed by signal 9"), err[-2000:]
    assert "--resume" in last
    assert not _alive(ranks[0])
    saved = load_checkpoint(checkpoint)
    done_epochs = saved["epoch"]
    assert 1 <= done_epochs < 1000

    resumed = subprocess.run(
        evorec(*common, "--set", f"epochs={done_epochs + 2}", "--resume"),
        env=_env(EVOREC_DIST_TIMEOUT="60"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = fit_info(out)["history"]
    assert [h["epoch"] for h in history] == list(range(1, done_epochs + 3))
    # the epochs before the kill are the checkpoint's, not trained again
    assert [h["loss"] for h in history[:done_epochs]] == [
        h["loss"] for h in saved["history"][:done_epochs]
    ]


def _update_inputs(tmp_path: Path) -> tuple[Path, str]:
    """A small SASRec without dropout (every rank computes the same function, as in
    :func:`train_case`) and a store with its events plus new ones: 60 known and 10 new
    users each walk 5 steps of a chain of 10 new items."""
    sim = simulate(n_users=150, n_items=80, n_topics=4, seed=1)
    data = preprocess(sim.raw, PreprocessConfig(min_user_events=5, min_item_events=5))
    model = {
        "name": "sasrec", "dim": 16, "max_len": 20, "dropout": 0.0, "loss": "softmax",
        "batch_size": 32, "epochs": 3, "device": "cpu",
    }  # fmt: skip
    base = tmp_path / "v1"
    train(RunConfig(model=model), base, dataset=data)
    db = f"sqlite:///{tmp_path / 'events.db'}"
    store = EventStore(db)
    try:
        store.import_dataset(data)
        start = int(data.events["timestamp"].max()) + 10
        users = data.user_ids.to_list()[:60] + list(range(90_000, 90_010))
        rng = np.random.default_rng(0)
        store.add_events(
            {"user_id": user, "item_id": 10_000 + (first + step) % 10, "timestamp": start + step}
            for user, first in zip(users, rng.integers(10, size=len(users)), strict=True)
            for step in range(5)
        )
    finally:
        store.close()
    return base, db


def test_update_on_two_processes_writes_the_single_process_version(
    tmp_path: Path, one_torch_thread: None
) -> None:
    base, db = _update_inputs(tmp_path)
    link = tmp_path / "current"
    outs = {}
    for nproc in (1, 2):
        outs[nproc] = tmp_path / f"nproc{nproc}"
        done = subprocess.run(
            evorec("update", "--model-dir", base, "--db", db, "--out", outs[nproc],
                   "--epochs", 2, "--link", link, "--quiet", "--nproc", nproc),
            env=_env(COLUMNS="200", EVOREC_DIST_TIMEOUT="60"), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        # rank 0 alone reports (and points the link)
        assert done.stdout.count("hold-out: last event of 70 updated users") == 1, done.stdout
    assert link.resolve() == outs[2].resolve()

    manifests = {n: json.loads((out / "evorec-model.json").read_text()) for n, out in outs.items()}
    counts = {
        n: {k: v for k, v in m["update"].items() if isinstance(v, int)}
        for n, m in manifests.items()
    }
    assert counts[1] == counts[2] and counts[2]["new_events"] == 70 * 5, counts
    assert manifests[1]["cutoff"] == manifests[2]["cutoff"]

    single, ddp = (load_model(outs[n]) for n in (1, 2))
    assert ddp.n_items == single.n_items == load_model(base).n_items + 10
    one = single.fitted_network().state_dict()
    two = ddp.fitted_network().state_dict()
    old = load_model(base).fitted_network().state_dict()
    assert one.keys() == two.keys()
    # the same AdamW steps on the same global batches, in both fine-tunes (measured and refit)
    for key, value in one.items():
        diff = (two[key] - value).abs().max().item()
        assert diff <= TOLERANCE["adamw"], f"{key}: max difference {diff}"
    # an update that moved nothing would match too
    moved = max((one[k] - v).abs().max().item() for k, v in old.items() if one[k].shape == v.shape)
    assert moved > 10 * TOLERANCE["adamw"], "the update did not move the parameters"
