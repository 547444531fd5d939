"""``evorec compress``: a smaller or faster copy of a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def compress(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    out: Annotated[Path, typer.Option("--out", help="directory of the compressed model")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="fp16, int8, dynamic-int8, prune, sq8, pq or distill; several joined with + "
            "(e.g. dynamic-int8+sq8)",
        ),
    ],
    sparsity: Annotated[float, typer.Option(help="prune: share of linear weights zeroed")] = 0.5,
    nprobe: Annotated[int, typer.Option(help="sq8/pq: IVF cells scanned per query")] = 32,
    pq_m: Annotated[int | None, typer.Option(help="pq: sub-vectors per item vector")] = None,
    student_dim: Annotated[int, typer.Option(help="distill: the student's width")] = 32,
    student_layers: Annotated[int, typer.Option(help="distill: the student's blocks")] = 1,
    epochs: Annotated[int, typer.Option(help="distill: most student epochs")] = 100,
    alpha: Annotated[float, typer.Option(help="distill: weight of the teacher's KL")] = 0.5,
    temperature: Annotated[float, typer.Option(help="distill: softmax temperature")] = 1.0,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Write a compressed copy of a model (quantised parameters or item index, pruned
    encoder, or a distilled student) that loads and serves like any model directory."""
    from evorec.training.compress import compress as run_compress

    settings = {
        "sparsity": sparsity,
        "nprobe": nprobe,
        "pq_m": pq_m,
        "student_dim": student_dim,
        "student_layers": student_layers,
        "epochs": epochs,
        "alpha": alpha,
        "temperature": temperature,
    }
    path = run_compress(model_dir, out, method, settings, progress=not quiet)
    console.print(
        f"{method} model saved to [bold]{path}[/bold] "
        f"({_size(path) / 1e6:.2f} MB, source {_size(model_dir) / 1e6:.2f} MB)",
        soft_wrap=True,
        highlight=False,
    )


def _size(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def register(app: typer.Typer) -> None:
    """Add ``compress`` to the ``evorec`` app."""
    if not any(command.callback is compress for command in app.registered_commands):
        app.command()(compress)
