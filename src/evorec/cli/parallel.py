"""``--nproc N``: a training command run as N data-parallel processes (PyTorch DDP)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

NprocOption = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="train on N processes of this machine with PyTorch DDP (NCCL on GPUs, Gloo "
        "on CPU); several machines: torchrun ... -m evorec (docs/benchmarks.md)",
    ),
]


def distributed(nproc: int, console: Console) -> bool:
    """Start ``nproc`` ranks of this command and wait for them (True: nothing is left to do
    in this process), or join the run the environment describes (a rank that ``--nproc``
    or torchrun started); ranks other than 0 print nothing but errors."""
    from evorec.training.distributed import join_from_env, launch

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        launch(nproc, sys.argv[1:])
        return True
    console.quiet = not join_from_env().is_main
    return False
