"""``evorec data``: download, inspect and simulate datasets."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from evorec.data.download import download as download_dataset
from evorec.data.formats import DEFAULT_ENCODING, FORMATS, format_names, formats_help, read_events
from evorec.data.schema import BEHAVIOR, ITEM, TIME, USER, RawData
from evorec.data.simulate import simulate as simulate_dataset

app = typer.Typer(help="Download, inspect and simulate datasets.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)


@app.command()
def download(
    name: str = typer.Argument(..., help="Dataset name, e.g. ml-100k, ml-1m, ml-latest-small."),
    home: Path | None = typer.Option(None, "--home", help="Cache directory (default: data home)."),
    base_url: str | None = typer.Option(None, "--base-url", help="Download from this host."),
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
) -> None:
    """Download a public dataset into the cache and print its directory."""
    path = download_dataset(name, home=home, base_url=base_url, force=force)
    typer.echo(str(path))


@app.command()
def simulate(
    out: Path = typer.Option(
        ..., "--out", help="Directory for events.csv, items.csv, truth.parquet."
    ),
    users: int = typer.Option(1000, "--users", help="Number of users."),
    items: int = typer.Option(500, "--items", help="Number of items."),
    topics: int = typer.Option(10, "--topics", help="Number of topics."),
    drift: float = typer.Option(0.1, "--drift", help="Per-step probability of an interest switch."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Simulate users with drifting interests and save the events and the ground truth."""
    data = simulate_dataset(n_users=users, n_items=items, n_topics=topics, drift=drift, seed=seed)
    directory = data.save(out)
    _out.print(f"{data.raw.events.height:,} events of {users:,} users written to {directory}")


@app.command()
def info(
    data: Path = typer.Option(..., "--data", help="Dataset file or directory."),
    format: str = typer.Option(
        "auto", "--format", help=f"{formats_help()} (see evorec data formats)."
    ),
    encoding: str = typer.Option(
        DEFAULT_ENCODING, "--encoding", help="Text encoding of the data files, e.g. latin-1."
    ),
) -> None:
    """Read a dataset and print its size, time span and side tables."""
    raw = read_events(data, format, encoding=encoding)
    _out.print(_summary(raw))


@app.command("formats")
def list_formats() -> None:
    """List the input formats: what each detects, whether it reads a directory and takes a
    column mapping (--format / data.format)."""
    table = Table(title="input formats")
    for column in ("format", "detected from", "directory", "columns"):
        table.add_column(column)
    for fmt in (FORMATS[name] for name in format_names()):
        directory, columns = (
            "yes" if flag else "" for flag in (fmt.reads_directory, fmt.takes_columns)
        )
        table.add_row(fmt.name, fmt.layout, directory, columns)
    _out.print(table)


def _summary(raw: RawData) -> Table:
    events = raw.events
    table = Table(title=raw.name)
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    if raw.sources:
        more = f" (+{len(raw.sources) - 1} more)" if len(raw.sources) > 1 else ""
        table.add_row("source", f"{raw.sources[0]}{more}")
    users, items = events[USER].n_unique(), events[ITEM].n_unique()
    table.add_row("events", f"{events.height:,}")
    table.add_row("users", f"{users:,}")
    table.add_row("items", f"{items:,}")
    table.add_row("events per user", f"{events.height / max(users, 1):.1f}")
    table.add_row("density", f"{events.height / max(users * items, 1):.2e}")
    bad = events.filter(pl.any_horizontal(pl.col(USER, ITEM, TIME).is_null())).height
    table.add_row("rows with unparsed fields", f"{bad:,}")
    if raw.has_time and events[TIME].drop_nulls().len():
        first, last = events[TIME].min(), events[TIME].max()
        table.add_row("time span", f"{_date(first)} .. {_date(last)}")
    else:
        table.add_row("time", "order only")
    behaviors = events[BEHAVIOR].drop_nulls().value_counts(sort=True)
    if behaviors.height:
        counts = ", ".join(f"{b} {n:,}" for b, n in behaviors.iter_rows())
        table.add_row("behaviors", counts)
    for label, side in (("item table", raw.items), ("user table", raw.users)):
        if side is not None:
            table.add_row(label, f"{side.height:,} rows: {', '.join(side.columns[1:])}")
    return table


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")
