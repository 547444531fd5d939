"""The ``evorec`` command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from evorec import __version__
from evorec.errors import DataError, EvorecError

app = typer.Typer(
    name="evorec",
    help="Learn how users' interests evolve and recommend from it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

SECTIONS = ("data", "model", "evaluation")


def _register_subcommands() -> None:
    from evorec.cli.data_commands import app as data_app

    app.add_typer(data_app, name="data")


def _overrides(sets: list[str] | None) -> list[str]:
    """``key=value`` without a section prefix applies to the model section."""
    out = []
    for item in sets or []:
        key = item.split("=", 1)[0]
        out.append(item if key.split(".")[0] in SECTIONS else f"model.{item}")
    return out


def metrics_table(title: str, rows: dict[str, dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, values in rows.items():
        cells = []
        for column in columns:
            value = values.get(column)
            cells.append(f"{value:.4f}" if isinstance(value, float) else str(value or "-"))
        table.add_row(name, *cells)
    return table


def _print_report(dataset: Any) -> None:
    report = dataset.meta.get("report", [])
    cache = dataset.meta.get("cache", {})
    if cache.get("hit"):
        console.print(f"[dim]processed data from cache {cache['path']}[/dim]")
        return
    table = Table(title="preprocessing", show_lines=False)
    for column in ("step", "before", "after", "removed", "detail"):
        table.add_column(
            column, justify="right" if column in ("before", "after", "removed") else "left"
        )
    for step in report:
        table.add_row(
            step["step"],
            str(step["before"]),
            str(step["after"]),
            str(step["removed"]),
            step["detail"],
        )
    console.print(table)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="directory to write the model to")],
    data: Annotated[str | None, typer.Option("--data", help="event file or directory")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="input format (auto)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="pop, ease, gru4rec, sasrec")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. lr=0.002 or data.format=csv")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint in --out")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train a model, evaluate it on the held-out split and save it."""
    from evorec.config import load_run_config
    from evorec.training.pipeline import load_data
    from evorec.training.pipeline import train as run_train

    base: dict[str, Any] = {"data": {}, "model": {}}
    if data is not None:
        base["data"]["path"] = data
    if fmt is not None:
        base["data"]["format"] = fmt
    run_config = load_run_config(config, _overrides(sets), base)
    if model is not None:
        run_config.model["name"] = model
    dataset = load_data(run_config.data)
    _print_report(dataset)
    result = run_train(run_config, out, dataset=dataset, progress=not quiet, resume=resume)
    metrics = result.test.metrics
    console.print(
        metrics_table(
            f"test ({result.split.protocol['split']}, full ranking, "
            f"seen items {'filtered' if result.test.filter_seen else 'kept'}, "
            f"{result.test.users} users)",
            {result.model.name: metrics},
            list(metrics),
        )
    )
    console.print(f"model saved to [bold]{out}[/bold] ({result.train_seconds:.1f}s training)")


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    filter_seen: Annotated[
        bool | None, typer.Option("--filter-seen/--keep-seen", help="default: as trained")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write metrics as JSON")] = None,
) -> None:
    """Evaluate a saved model on its test split (full ranking)."""
    from evorec.training.pipeline import evaluate_model_dir

    model, split, result = evaluate_model_dir(model_dir, filter_seen=filter_seen)
    console.print(
        metrics_table(
            f"{split.protocol['split']}, full ranking over {model.n_items} items, seen items "
            f"{'filtered' if result.filter_seen else 'kept'}, {result.users} users",
            {model.name: result.metrics},
            list(result.metrics),
        )
    )
    if json_out is not None:
        write_atomic_text(json_out, json.dumps(result.to_dict(), indent=2))


def _read_user_file(path: Path) -> list[str]:
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
    else:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise DataError("no user ids", path=path)
        header = lines[0].split(",")[0]
        if header in ("user_id", "user"):
            lines = lines[1:]
        return [line.split(",")[0] for line in lines]
    column = "user_id" if "user_id" in frame.columns else frame.columns[0]
    return frame[column].cast(pl.Utf8).to_list()


def write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write CSV or Parquet (by extension) through a temp file and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    user: Annotated[list[str] | None, typer.Option("--user", help="user id (repeatable)")] = None,
    users: Annotated[Path | None, typer.Option("--users", help="file of user ids")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="how many items")] = 10,
    include_seen: Annotated[bool, typer.Option(help="allow items already in the history")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="write CSV or Parquet")] = None,
) -> None:
    """Top-k recommendations for known users from their full history."""
    from evorec.models.base import Recommender

    ids = list(user or [])
    if users is not None:
        ids += _read_user_file(users)
    if not ids:
        raise EvorecError("give --user ID or --users FILE")
    model = Recommender.load(model_dir)
    recs = model.recommend(ids, k=k, filter_seen=not include_seen)
    if out is not None:
        write_frame(recs, out)
        console.print(f"{recs.height} recommendations for {len(ids)} users written to {out}")
        return
    items = model.dataset.items if model.dataset is not None else None
    if items is not None and "title" in items.columns:
        titles = items.select(pl.col("item_id").cast(recs["item_id"].dtype), "title")
        recs = recs.join(titles, on="item_id", how="left", maintain_order="left")
    table = Table(title=f"{model.name} recommendations")
    for column in recs.columns:
        table.add_column(column)
    for row in recs.iter_rows():
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


@app.command()
def bench(
    data: Annotated[list[str], typer.Option("--data", help="dataset path (repeatable)")],
    out: Annotated[Path, typer.Option("--out", help="results JSON (a .md table is written too)")],
    fmt: Annotated[str, typer.Option("--format", help="input format")] = "auto",
    models: Annotated[str, typer.Option(help="comma-separated models")] = "pop,ease,gru4rec,sasrec",
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="override: key=value for all models, sasrec.key=value for one"),
    ] = None,
    quality: Annotated[
        float, typer.Option(help="report the training time to reach this valid NDCG@10")
    ] = 0.04,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Standard protocol (leave-one-out, full ranking) for each model on each dataset."""
    from evorec.benchmarking.bench import markdown_table, run_bench

    results = run_bench(
        data,
        [m.strip() for m in models.split(",") if m.strip()],
        fmt=fmt,
        overrides=sets or [],
        quality=quality,
        progress=not quiet,
        console=console,
    )
    write_atomic_text(out, json.dumps(results, indent=2))
    write_atomic_text(out.with_suffix(".md"), markdown_table(results))
    console.print(markdown_table(results))
    console.print(f"results written to {out} and {out.with_suffix('.md')}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="working directory")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="training epochs for the neural models")] = 30,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 0,
) -> None:
    """Simulate drifting users, train SASRec and baselines, show how recommendations follow."""
    from evorec.demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, console=console)


@app.command()
def version() -> None:
    """Print the evorec version."""
    console.print(__version__)


def main() -> None:
    _register_subcommands()
    try:
        app()
    except EvorecError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
