"""Data-parallel training on PyTorch DistributedDataParallel (DDP).

A run of N processes is described by the environment variables that ``torchrun`` sets
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); ``evorec train
--nproc N`` starts N such processes on this machine (:func:`launch`). :func:`join_from_env`
joins the process group (NCCL for CUDA tensors, Gloo for CPU ones).

The training loop asks :class:`DataParallel` for one optimiser step over the global batch:
every batch of the epoch (the same list on every rank, drawn with the same seed) is split
into N shards, each rank computes its shard's loss through DDP, which all-reduces the
gradients; each rank's loss is weighted by its share of the batch's scored positions, so
the step equals a single process's step on the whole batch. The item table of
``sparse_items`` (looked up with sparse gradients) is left out of DDP, whose reducer
all-reduces sparse gradients on Gloo only (NCCL has no sparse all-reduce): every rank
gathers the others' touched rows and values instead (all-gathers of dense tensors, which
both backends run) and averages them as DDP averages the dense gradients. Validation is
split the same way and its metric reduced, then broadcast from rank 0, so every rank takes
the same early-stopping decision. Rank 0 writes checkpoints and the model directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from evorec.errors import ConfigError, EvorecError

if TYPE_CHECKING:
    from evorec.models.base import EpochTask

TIMEOUT_ENV = "EVOREC_DIST_TIMEOUT"  # seconds a collective waits for the other ranks
DEFAULT_TIMEOUT = 1800.0
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0
# scalars and checkpoints travel over Gloo (CPU), gradients over the parameters' backend
REDUCE_DEVICE = torch.device("cpu")


class DistributedError(EvorecError):
    """A rank of a distributed run failed, or the run could not start."""


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> Context:
    """This process's place in the run (a single process outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return Context(
            dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
        )
    return Context()


def is_main() -> bool:
    """True on rank 0 and outside a distributed run: the process that writes files."""
    return context().is_main


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: not a number of seconds") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: must be positive")
    return seconds


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: not an integer") from None


def join_from_env() -> Context:
    """Join the process group the environment describes (``WORLD_SIZE`` > 1, as torchrun
    or ``--nproc`` set it), left when the process exits; a single process otherwise."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1 or dist.is_initialized():
        return context()
    local = _env_int("LOCAL_RANK", 0)
    if torch.cuda.is_available():
        torch.cuda.set_device(local)  # "cuda" means this rank's device from here on
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot join the distributed run: {_first_line(exc)}") from None
    atexit.register(_leave)
    return context()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The first rank of each machine runs the block first (it fills that machine's caches:
    the processed data), the machine's other ranks after it, so that no two ranks write the
    same file."""
    ctx = context()
    if ctx.active and ctx.local_rank != 0:
        _barrier(ctx)
    yield
    if ctx.active and ctx.local_rank == 0:
        _barrier(ctx)


def _barrier(ctx: Context) -> None:
    try:
        dist.barrier()
    except RuntimeError:  # a rank failed before reaching it, and says why itself
        raise DistributedError(
            f"rank {ctx.rank}: another rank stopped before the barrier"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _TaskLoss(nn.Module):
    """The task's batch loss as a module's forward, so DDP sees the forward pass."""

    def __init__(self, task: EpochTask) -> None:
        super().__init__()
        self.network = task.module
        self._loss = task.loss

    def forward(self, batch: Any) -> tuple[torch.Tensor, int]:
        return self._loss(batch)


class DataParallel:
    """One rank's side of DDP training of an :class:`~evorec.models.base.EpochTask`."""

    def __init__(self, task: EpochTask, ctx: Context) -> None:
        self.ctx = ctx
        wrapper = _TaskLoss(task)
        # the item table of sparse_items: its rows are averaged by sparse_reduce, not DDP
        self.sparse = (
            [task.module.item_embedding.weight]
            if getattr(task.module, "sparse_rows", False)
            else []
        )
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            wrapper,
            [name for name, p in wrapper.named_parameters() if any(p is t for t in self.sparse)],
        )
        with torch.no_grad():  # DDP gives every rank rank 0's parameters, bar the ignored
            for table in self.sparse:
                dist.broadcast(table, src=0)
        device = next(task.module.parameters()).device
        self.ddp = DistributedDataParallel(
            wrapper,
            device_ids=[device.index] if device.type == "cuda" else None,
        )

    def shard(self, batches: Sequence[Any]) -> list[Any]:
        """This rank's share of every global batch; a batch with fewer rows than ranks
        (only ever the epoch's last) is left out so that every rank gets rows."""
        world, rank = self.ctx.world_size, self.ctx.rank
        out = []
        for batch in batches:
            if len(batch) < world:
                continue
            if isinstance(batch, torch.Tensor):
                out.append(torch.tensor_split(batch, world)[rank])
            else:
                out.append(np.array_split(np.asarray(batch), world)[rank])
        return out

    @contextlib.contextmanager
    def step(self, *, sync: bool) -> Iterator[None]:
        """Around a batch's forward and backward; ``sync``: its backward ends an optimiser
        step, so DDP all-reduces the gradients and :meth:`sparse_reduce` the sparse ones
        (otherwise they accumulate locally)."""
        if not sync:
            with self.ddp.no_sync():
                yield
            return
        yield
        self.sparse_reduce()

    def sparse_reduce(self) -> None:
        """Every rank's sparse gradient of each table left out of DDP, summed per row and
        divided by the number of ranks (DDP's average): the rows and values of all ranks are
        gathered, each padded to the longest rank's, and coalesced in rank order, so every
        rank steps on the same gradient."""
        world = self.ctx.world_size
        for table in self.sparse:
            device = table.device
            grad = table.grad
            if grad is None:  # no row looked up on this rank: it still takes part
                grad = torch.sparse_coo_tensor(
                    torch.zeros((1, 0), dtype=torch.long, device=device),
                    table.new_zeros((0, *table.shape[1:])),
                    table.shape,
                )
            grad = grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
            sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
            dist.all_gather(sizes, torch.tensor([len(rows)], device=device))
            counts = [int(size.item()) for size in sizes]
            pad = max(counts) - len(rows)
            all_rows = [rows.new_empty(max(counts)) for _ in range(world)]
            dist.all_gather(all_rows, torch.cat([rows, rows.new_zeros(pad)]))
            all_values = [values.new_empty((max(counts), *values.shape[1:])) for _ in range(world)]
            dist.all_gather(
                all_values, torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
            )
            table.grad = torch.sparse_coo_tensor(
                torch.cat([r[:n] for r, n in zip(all_rows, counts, strict=True)])[None],
                torch.cat([v[:n] for v, n in zip(all_values, counts, strict=True)]) / world,
                table.shape,
                check_invariants=False,  # rows of valid sparse tensors, within the table
            ).coalesce()

    def loss(self, batch: Any) -> tuple[torch.Tensor, int, float]:
        """This shard's loss and count, and the weight that makes DDP's gradient average
        the global batch's mean: the shard's share of the scored positions times the
        number of ranks."""
        try:
            loss, count = self.ddp(batch)
        except RuntimeError as exc:
            if "finished reduction" not in str(exc):
                raise
            raise DistributedError(
                "distributed training needs every trainable parameter in every batch's "
                "loss, and the last batch left one without a gradient; train this model "
                "in one process"
            ) from None
        total = self.sum([count])[0]
        return loss, count, count * self.ctx.world_size / max(total, 1.0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks."""
        tensor = torch.tensor(values, dtype=torch.float64, device=REDUCE_DEVICE)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank: one decision for all."""
        tensor = torch.tensor([value], dtype=torch.float64, device=REDUCE_DEVICE)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def rows(self, n: int) -> np.ndarray:
        """This rank's share of ``n`` rows (validation users)."""
        return np.array_split(np.arange(n), self.ctx.world_size)[self.ctx.rank]


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` (a checkpoint that only rank 0 read) on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0, device=REDUCE_DEVICE)
    return box[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(nproc: int, argv: list[str]) -> None:
    """Run ``python -m evorec ARGV`` as ``nproc`` ranks of one run on this machine, with the
    environment torchrun would give them; when a rank fails, stop the others and raise one
    :class:`DistributedError` naming it."""
    base = dict(os.environ)
    base.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        GROUP_RANK="0",
    )
    # as torchrun: one intra-op thread per rank unless the caller chose
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    procs = []
    for rank in range(nproc):
        env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, "-m", "evorec", *argv], env=env))
    try:
        failed = _wait_all(procs)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    if failed is not None:
        rank, code = failed
        _stop(procs)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        hint = (
            " Rerun the same command with --resume to continue from the last checkpoint"
            if next((arg for arg in argv if not arg.startswith("-")), None) == "train"
            else ""
        )
        raise DistributedError(f"rank {rank} of {nproc} {how}; the other ranks were stopped.{hint}")


def _wait_all(procs: list[subprocess.Popen[bytes]]) -> tuple[int, int] | None:
    """Wait until every rank exits; the first failed rank and its exit status, if any."""
    while True:
        codes = [p.poll() for p in procs]
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                return rank, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(POLL_SECONDS)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
