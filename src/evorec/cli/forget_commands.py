"""``evorec forget``: a model version that has forgotten some users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def forget(
    model_dir: Annotated[
        Path, typer.Option("--model-dir", help="the model directory, or a link to it")
    ],
    users: Annotated[list[str], typer.Option("--user", help="user id to forget (repeatable)")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="directory of the new version (default: <name>-forget-<n>)"),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="event store to erase the users from too (its erased users are forgotten "
            "as well): sqlite:///PATH or postgresql://..."
        ),
    ] = None,
    keep_old: Annotated[
        bool, typer.Option(help="keep the old versions that still hold the users")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Retrain only what learned from the users (a sharded model: their shards) without
    them; new version with lineage, the link re-pointed, old versions holding them removed."""
    from evorec.store import EventStore
    from evorec.training.forget import forget as run_forget

    store = EventStore(db) if db is not None else None
    try:
        result = run_forget(
            model_dir, users, out, store=store, keep_old=keep_old, progress=not quiet
        )
    finally:
        if store is not None:
            store.close()
    shards = (
        f"shards {', '.join(map(str, result.retrained))} of {result.shards} retrained"
        if result.shards > 1
        else "model retrained"
    )
    console.print(
        f"forgot {result.users:,} users ({result.events:,} events): {shards} in "
        f"{result.train_seconds:.1f}s; saved to [bold]{result.out}[/bold]"
        + (f", {model_dir} -> {result.out}" if model_dir.is_symlink() else ""),
        soft_wrap=True,
        highlight=False,
    )
    for path in result.removed:
        console.print(f"removed old version {path}", soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``forget`` to the ``evorec`` app."""
    if not any(command.callback is forget for command in app.registered_commands):
        app.command()(forget)
