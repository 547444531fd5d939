"""The ``evorec`` command line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from evorec.cli.parallel import NprocOption, distributed
from evorec.data.formats import formats_help
from evorec.errors import ConfigError, DataError, EvorecError
from evorec.io import FRAME_FORMATS, write_atomic_text, write_frames
from evorec.models import MODELS, SequentialRecommender
from evorec.version import __version__

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
FORMAT_HELP = f"input format: {formats_help()} (see evorec data formats)"
ENCODING_HELP = "text encoding of the data files, e.g. latin-1 (default: data.encoding, utf-8)"
# what ``recommend --out`` writes, by the file's extension
OUTPUT_FORMATS = FRAME_FORMATS
# the --model help, from the registry
MODEL_NAMES = ", ".join(MODELS)
SEQUENCE_MODEL_NAMES = ", ".join(
    name for name, cls in MODELS.items() if issubclass(cls, SequentialRecommender)
)


@app.callback()
def options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every epoch")] = False,
) -> None:
    """Learn how users' interests evolve and recommend from it."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )


def _register_subcommands() -> None:
    from evorec.cli.data_commands import app as data_app

    if not any(group.typer_instance is data_app for group in app.registered_groups):
        app.add_typer(data_app, name="data")
    from evorec.cli.forget_commands import register as register_forget

    register_forget(app)
    from evorec.cli.explain_commands import explain

    if not any(command.callback is explain for command in app.registered_commands):
        app.command()(explain)

    from evorec.cli.inspect_commands import register as register_inspect

    register_inspect(app)
    from evorec.cli.compress_commands import register as register_compress

    register_compress(app)


def _overrides(sets: list[str] | None) -> list[str]:
    """``key=value`` without a section prefix applies to the model section."""
    out = []
    for item in sets or []:
        key = item.split("=", 1)[0]
        prefixed = "=" in item and key.split(".")[0] not in SECTIONS
        out.append(f"model.{item}" if prefixed else item)  # no '=': the error shows it as given
    return out


def _set_encoding(run_config: Any, encoding: str | None) -> None:
    """``--encoding`` over ``data.encoding``, checked like it."""
    from evorec.data.formats import check_encoding

    if encoding is not None:
        check_encoding(encoding)
        run_config.data.encoding = encoding


def _check_bench_overrides(sets: list[str], models: list[str]) -> None:
    """Fail before any training on an unknown model, or on a ``--set`` key that no selected
    model has (``bench`` applies a shared key only to the models that have it)."""
    from evorec.models import get_model_class

    classes = {name: get_model_class(name) for name in models}
    for item in sets:
        key = item.split("=", 1)[0].strip()
        head, _, rest = key.partition(".")
        targets = [head] if head in classes and rest else list(classes)
        field = rest if head in classes and rest else key
        if not any(field in classes[name].config_class.model_fields for name in targets):
            raise ConfigError(f"--set {item}: no model field '{field}' in {', '.join(targets)}")


def metrics_table(
    title: str, metrics: dict[str, float], ci95: dict[str, float] | None = None
) -> Table:
    """One row per cut-off K, one column per metric; other values (coverage) in the title.
    With ``ci95`` (a sampled evaluation) each value shows its 95% confidence interval."""
    by_k: dict[str, dict[str, float]] = {}
    extras = []
    for key, value in metrics.items():
        name, _, k = key.partition("@")
        if name in ("HR", "NDCG", "MRR", "Recall"):
            by_k.setdefault(k, {})[name] = value
        else:
            extras.append(f"{key} {value:.4f}")
    names = [n for n in ("HR", "NDCG", "MRR", "Recall") if any(n in row for row in by_k.values())]
    table = Table(title=title, caption=", ".join(extras) or None)
    table.add_column("K", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for k, row in by_k.items():
        table.add_row(k, *(_with_ci(row[name], (ci95 or {}).get(f"{name}@{k}")) for name in names))
    return table


def _with_ci(value: float, half_width: float | None) -> str:
    return f"{value:.4f}" + (f" ± {half_width:.4f}" if half_width is not None else "")


def _print_report(dataset: Any) -> None:
    report = dataset.meta.get("report", [])
    cache = dataset.meta.get("cache", {})
    if cache.get("hit"):
        # the report is cached with the data: dropped lines are still worth showing
        console.print(f"[dim]processed data from cache {cache['path']}[/dim]")
    if not report:
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


RefitOption = Annotated[
    bool,
    typer.Option(
        help="after choosing the epochs on validation, train again on every event "
        "(each user's latest included) and save that model"
    ),
]


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="directory to write the model to")],
    data: Annotated[str | None, typer.Option("--data", help="event file or directory")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help=ENCODING_HELP)] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help=f"one of {MODEL_NAMES}",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. lr=0.002 or data.format=csv")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint in --out")] = False,
    refit: RefitOption = True,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    nproc: NprocOption = 1,
) -> None:
    """Train a model (epochs chosen on the validation split), evaluate it on the held-out
    test events, refit it on every event and save it."""
    if distributed(nproc, console):
        return
    from evorec.config import load_run_config
    from evorec.training.pipeline import CHECKPOINT, build_model, load_data
    from evorec.training.pipeline import train as run_train

    run_config = load_run_config(config, _overrides(sets))
    # Flags given on the command line win over the config file.
    if data is not None:
        run_config.data.path = data
    if fmt is not None:
        run_config.data.format = fmt
    _set_encoding(run_config, encoding)
    if model is not None:
        run_config.model["name"] = model
    build_model(run_config)  # an unknown model or a bad model setting fails before reading
    if resume and not (out / CHECKPOINT).is_file():
        err_console.print(
            f"note: --resume: no {CHECKPOINT} in {out}; training from the start",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    dataset = load_data(run_config.data)
    _print_report(dataset)
    result = run_train(
        run_config, out, dataset=dataset, progress=not quiet, resume=resume, refit=refit
    )
    metrics = result.test.metrics
    console.print(
        metrics_table(
            f"{result.model.name} test: {result.split.protocol['split']}, full ranking, "
            f"seen items {'filtered' if result.test.filter_seen else 'kept'}, "
            f"{result.test.users_label()}",
            metrics,
            result.test.ci95 if result.test.sampled else None,
        )
    )
    if refit:
        console.print(
            f"refit on all {result.split.full.n_events:,} events (the test metrics above are "
            "from the model before the refit, on events it had not seen)"
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
    """Evaluate a saved model on its test split (full ranking); for a model refit on every
    event, show the held-out metrics measured before the refit."""
    from evorec.evaluation.evaluator import users_label
    from evorec.models.base import read_manifest
    from evorec.training.pipeline import evaluate_model_dir

    manifest = read_manifest(model_dir)
    if "refit" in manifest and filter_seen is None:
        held_out = manifest["test"]
        users, population = held_out["users"], held_out.get("population", held_out["users"])
        sampled = users < population  # older models record no population: tested on all
        console.print(
            metrics_table(
                f"{manifest['model']} test, measured before the refit on all events: "
                f"{manifest['protocol']['split']}, full ranking, seen items "
                f"{'filtered' if held_out['filter_seen'] else 'kept'}, "
                f"{users_label(users, population)}",
                {
                    k: v
                    for k, v in held_out.items()
                    if k not in ("users", "population", "filter_seen", "ci95")
                },
                held_out["ci95"] if sampled else None,
            )
        )
        if json_out is not None:
            write_atomic_text(json_out, json.dumps(held_out, indent=2))
        return
    model, split, result = evaluate_model_dir(model_dir, filter_seen=filter_seen)
    console.print(
        metrics_table(
            f"{model.name} test: {split.protocol['split']}, full ranking over {model.n_items} "
            f"items, seen items {'filtered' if result.filter_seen else 'kept'}, "
            f"{result.users_label()}",
            result.metrics,
            result.ci95 if result.sampled else None,
        )
    )
    if json_out is not None:
        write_atomic_text(json_out, json.dumps(result.to_dict(), indent=2))


def _read_user_file(path: Path, encoding: str) -> list[str]:
    if not path.exists():
        raise DataError("file not found", path=path)
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise DataError(f"cannot read: {exc}", path=path) from None
        if frame.is_empty():
            raise DataError("no user ids", path=path)
    else:
        lines = [line.strip() for line in _read_text(path, encoding).splitlines() if line.strip()]
        if not lines:
            raise DataError("no user ids", path=path)
        header = lines[0].split(",")[0]
        if header in ("user_id", "user"):
            lines = lines[1:]
        if not lines:
            raise DataError("no user ids", path=path)
        return [line.split(",")[0] for line in lines]
    column = "user_id" if "user_id" in frame.columns else frame.columns[0]
    return frame[column].cast(pl.Utf8).to_list()


def _read_text(path: Path, encoding: str) -> str:
    """The text of a small file; bytes not valid in ``encoding`` name their line."""
    from evorec.data.formats import check_encoding

    data = path.read_bytes()
    try:
        return data.decode(check_encoding(encoding))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid {encoding} text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
            f"({exc.reason}); read it with its encoding, e.g. --encoding latin-1",
            path=path,
            line=data[: exc.start].count(b"\n") + 1,
        ) from None


def check_output(path: Path) -> None:
    """Refuse an output file whose extension names a format that is not written."""
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(
            f"--out {path}: cannot write {path.suffix or 'a file without an extension'}; "
            f"name the file with one of {', '.join(OUTPUT_FORMATS)}"
        )


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write the format of the extension (see :data:`OUTPUT_FORMATS`), atomically."""
    check_output(path)
    write_frames(path, [frame])


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    user: Annotated[list[str] | None, typer.Option("--user", help="user id (repeatable)")] = None,
    users: Annotated[Path | None, typer.Option("--users", help="file of user ids")] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="every user the model knows (needs --out)")
    ] = False,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="how many items")] = 10,
    include_seen: Annotated[bool, typer.Option(help="allow items already in the history")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", help=f"write to a file: {', '.join(OUTPUT_FORMATS)}"),
    ] = None,
    batch_users: Annotated[
        int,
        typer.Option("--batch-users", min=1, help="users ranked and written at a time with --out"),
    ] = 4096,
    encoding: Annotated[str, typer.Option("--encoding", help="text encoding of --users")] = "utf-8",
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Top-k recommendations for known users from their full history; with --out they are
    written as they are ranked, --batch-users at a time (memory bounded by one batch)."""
    from evorec.models.base import Recommender

    if out is not None:
        check_output(out)  # before any work
    ids = list(user or [])
    if users is not None:
        ids += _read_user_file(users, encoding)
    if all_users and (ids or out is None):
        raise EvorecError("--all-users takes no --user/--users and needs --out FILE")
    if not ids and not all_users:
        raise EvorecError("give --user ID, --users FILE or --all-users")
    model = Recommender.load(model_dir)
    if out is not None:
        selected = None if all_users else ids
        if selected is not None:
            model.fitted_dataset().encode_users(selected)  # unknown ids fail before any work
        batches = model.recommend_batches(
            selected, batch=batch_users, k=k, filter_seen=not include_seen
        )
        n = model.fitted_dataset().n_users if all_users else len(ids)
        with Progress(console=err_console, disable=quiet) as bar:
            task = bar.add_task("recommend", total=n)

            def counted(frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
                for done, frame in enumerate(frames, 1):
                    yield frame
                    bar.update(task, completed=min(done * batch_users, n))

            rows = write_frames(out, counted(batches))
        console.print(f"{rows} recommendations for {n} users written to {out}")
        return
    recs = model.recommend(ids, k=k, filter_seen=not include_seen)
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
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    models: Annotated[
        str, typer.Option(help=f"comma-separated models, from {MODEL_NAMES}")
    ] = "pop,ease,gru4rec,sasrec",
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="override: key=value for all models, sasrec.key=value for one"),
    ] = None,
    quality: Annotated[
        float, typer.Option(help="report the training time to reach this valid NDCG@10")
    ] = 0.04,
    seeds: Annotated[
        str | None,
        typer.Option(help="comma-separated seeds: each model trained once per seed, mean ± std"),
    ] = None,
    eval_users: Annotated[
        int | None,
        typer.Option(
            "--eval-users",
            min=2,
            help="test on a random sample of this many users (full ranking each), with 95% CIs",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Standard protocol (leave-one-out, full ranking) for each model on each dataset."""
    from evorec.benchmarking.bench import markdown_table, run_bench

    def save(results: dict[str, Any]) -> None:
        write_atomic_text(out, json.dumps(results, indent=2))
        write_atomic_text(out.with_suffix(".md"), markdown_table(results))

    _check_bench_overrides(sets or [], [m.strip() for m in models.split(",") if m.strip()])
    results = run_bench(
        data,
        [m.strip() for m in models.split(",") if m.strip()],
        fmt=fmt,
        overrides=sets or [],
        quality=quality,
        progress=not quiet,
        console=console,
        checkpoint=save,
        seeds=_seed_list(seeds),
        eval_users=eval_users,
    )
    save(results)
    console.print(markdown_table(results))
    console.print(f"results written to {out} and {out.with_suffix('.md')}")


def _seed_list(seeds: str | None) -> list[int] | None:
    if seeds is None:
        return None
    try:
        parsed = [int(seed) for seed in seeds.split(",") if seed.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: expected comma-separated integers") from None
    if not parsed or len(set(parsed)) != len(parsed):
        raise ConfigError(f"--seeds {seeds!r}: expected distinct comma-separated integers")
    return parsed


@app.command()
def sweep(
    data: Annotated[str, typer.Option("--data", help="dataset path")],
    model: Annotated[
        str, typer.Option("--model", help=f"sequence model to scale: {SEQUENCE_MODEL_NAMES}")
    ],
    sizes: Annotated[
        list[str],
        typer.Option("--size", help="one size as key=value pairs, e.g. 'dim=64,layers=2' (repeat)"),
    ],
    out: Annotated[Path, typer.Option("--out", help="results JSON (.md table and .png beside)")],
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="override for every size: key=value")
    ] = None,
    add: Annotated[
        bool, typer.Option("--add", help="add these sizes to the sweep already in --out")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train one model at several sizes: test NDCG@10 against parameters and training FLOPs."""
    from evorec.benchmarking.scaling import (
        merge_sweeps,
        parse_size,
        plot_sweep,
        run_sweep,
        sweep_header,
        sweep_table,
    )

    parsed = [parse_size(s) for s in sizes]
    _check_bench_overrides([*(sets or []), *(f"{k}=0" for p in parsed for k in p)], [model])
    previous = None
    if add:
        if not out.is_file():
            raise ConfigError(f"--add: no sweep results at {out}")
        previous = json.loads(out.read_text())
        # refuse before training
        merge_sweeps(previous, {**sweep_header(data, model, sets or []), "runs": []})
    results = run_sweep(
        data, model, parsed, fmt=fmt, overrides=sets or [], progress=not quiet, console=console
    )
    if previous is not None:
        results = merge_sweeps(previous, results)
    write_atomic_text(out, json.dumps(results, indent=2))
    write_atomic_text(out.with_suffix(".md"), sweep_table(results))
    plot_sweep(results, out.with_suffix(".png"))
    console.print(sweep_table(results))
    console.print(f"results written to {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="working directory")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="training epochs for the neural models")] = 30,
    users: Annotated[int, typer.Option(min=10, help="simulated users")] = 1500,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 0,
) -> None:
    """Simulate drifting users, train SASRec and baselines, show how recommendations follow."""
    from evorec.demo import run_demo

    run_demo(out, epochs=epochs, users=users, seed=seed, console=console)


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    db: Annotated[
        str | None,
        typer.Option(help="event store: sqlite:///PATH or postgresql://... (default: embedded)"),
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="EVOREC_API_KEY", help="X-API-Key required by write/admin calls"),
    ] = None,
    watch: Annotated[
        bool, typer.Option(help="poll --model-dir (or the link it is) and swap in new versions")
    ] = False,
    watch_interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between polls with --watch")
    ] = 2.0,
    workers: Annotated[
        int, typer.Option(min=1, help="worker processes, each with the model loaded")
    ] = 1,
    models_root: Annotated[
        Path | None,
        typer.Option(help="the only directory /admin/reload loads from (default: --model-dir's)"),
    ] = None,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="largest request body accepted (413 above)")
    ] = 8 * 2**20,
    allow_open: Annotated[
        bool, typer.Option(help="listen on a non-loopback --host without --api-key")
    ] = False,
    forget_on_delete: Annotated[
        bool,
        typer.Option(
            help="after DELETE /users/{id}, forget the user from the served model in the "
            "background and swap the new version in (one worker)"
        ),
    ] = False,
) -> None:
    """Serve recommendations over HTTP from users' stored, live-updated histories."""
    from evorec.serving.server import serve as run_server

    run_server(
        model_dir,
        db=db,
        host=host,
        port=port,
        api_key=api_key,
        console=console,
        watch=watch_interval if watch else None,
        workers=workers,
        models_root=models_root,
        max_body_bytes=max_body_bytes,
        allow_open=allow_open,
        forget_on_delete=forget_on_delete,
    )


@app.command()
def update(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="the current model directory")],
    out: Annotated[Path, typer.Option("--out", help="directory to write the new version to")],
    db: Annotated[
        str | None,
        typer.Option(help="event store: sqlite:///PATH or postgresql://... (default: embedded)"),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="fine-tuning epochs")] = 10,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the model's)")] = None,
    replay: Annotated[
        float, typer.Option(min=0, help="users without new events replayed per updated user")
    ] = 1.0,
    link: Annotated[
        Path | None, typer.Option(help="then point this link at --out (for serve --watch)")
    ] = None,
    reject_worse: Annotated[
        bool, typer.Option(help="write nothing when the hold-out NDCG@10 drops")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="--db is not the model's cut-off store: read its events after the cut-off time"
        ),
    ] = False,
    refit: Annotated[
        bool,
        typer.Option(
            help="after measuring on the hold-out, fine-tune again with it and save that model"
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    nproc: NprocOption = 1,
) -> None:
    """Fine-tune a sequence model on the store's events after its cut-off; new version."""
    if distributed(nproc, console):
        return
    from evorec.modeldir import point
    from evorec.store import EventStore
    from evorec.training.distributed import is_main, main_first
    from evorec.training.incremental import update as run_update
    from evorec.training.incremental import update_config

    config = update_config({"epochs": epochs, "lr": lr, "replay": replay})
    with main_first():  # opening creates or migrates the schema: one rank at a time
        store = EventStore(db)
    try:
        result = run_update(
            model_dir,
            store,
            out,
            config,
            progress=not quiet,
            reject_worse=reject_worse,
            force=force,
            refit=refit,
        )
    finally:
        store.close()
    if not is_main():  # rank 0 wrote the new version and reports it
        return
    if link is not None:
        point(link, out)
    counts = result.counts
    console.print(
        f"{counts['new_events']:,} new events: {counts['updated_users']:,} users updated "
        f"({counts['new_users']:,} new), {counts['new_items']:,} new items, "
        f"{counts['replay_users']:,} users replayed, {counts['erased_users']:,} erased users "
        "dropped"
    )
    table = Table(title=f"hold-out: last event of {counts['holdout_users']:,} updated users")
    table.add_column("model")
    names = list(result.new)
    for name in names:
        table.add_column(name, justify="right")
    table.add_row(f"old {result.parent_version}", *(f"{result.old[n]:.4f}" for n in names))
    table.add_row("updated", *(f"{result.new[n]:.4f}" for n in names))
    console.print(table)
    cutoff = result.cutoff
    console.print(
        f"saved to [bold]{out}[/bold] (cut-off: event id {cutoff.event_id}, time "
        f"{cutoff.timestamp}){f'; {link} -> {out}' if link else ''}",
        soft_wrap=True,
    )


@app.command()
def pretrain(
    data: Annotated[list[str], typer.Option("--data", help="source dataset path (repeatable)")],
    out: Annotated[Path, typer.Option("--out", help="directory to write the model to")],
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help=ENCODING_HELP)] = None,
    model: Annotated[
        str | None, typer.Option("--model", help=f"sequence model: {SEQUENCE_MODEL_NAMES}")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="override key=value")] = None,
    refit: RefitOption = True,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    nproc: NprocOption = 1,
) -> None:
    """Pretrain a sequence model on one or more source datasets (for evorec finetune)."""
    if distributed(nproc, console):
        return
    from evorec.config import load_run_config
    from evorec.training.transfer import pretrain as run_pretrain

    run_config = load_run_config(config, _overrides(sets))
    if fmt is not None:
        run_config.data.format = fmt
    _set_encoding(run_config, encoding)
    if model is not None:
        run_config.model["name"] = model
    result = run_pretrain(run_config, data, out, progress=not quiet, refit=refit)
    console.print(metrics_table(f"{result.model.name} source test", result.test.metrics))
    console.print(f"pretrained model saved to [bold]{out}[/bold]")


@app.command()
def finetune(
    from_dir: Annotated[Path, typer.Option("--from", help="pretrained model directory")],
    data: Annotated[str, typer.Option("--data", help="target dataset path")],
    out: Annotated[Path, typer.Option("--out", help="directory to write the model to")],
    freeze: Annotated[
        str, typer.Option(help="keep fixed: none, trunk (sequence encoder), items (item encoder)")
    ] = "none",
    fmt: Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help=ENCODING_HELP)] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML run config")] = None,
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. epochs=20 or lr=0.001")
    ] = None,
    refit: RefitOption = True,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    nproc: NprocOption = 1,
) -> None:
    """Fine-tune a pretrained sequence model on a target dataset (new item catalogue)."""
    if distributed(nproc, console):
        return
    from evorec.config import load_run_config
    from evorec.training.transfer import finetune as run_finetune
    from evorec.training.transfer import freeze_choice, load_pretrained

    choice = freeze_choice(freeze)
    source = load_pretrained(from_dir)  # a missing or wrong --from fails before reading
    run_config = load_run_config(config, _overrides(sets))
    run_config.data.path = data
    if fmt is not None:
        run_config.data.format = fmt
    _set_encoding(run_config, encoding)
    # the pretrained model's class, unless --set name=... asks for another (an error)
    named = [
        s.split("=", 1)[1].strip()
        for s in sets or []
        if s.split("=", 1)[0].strip() in ("name", "model.name")
    ]
    run_config.model["name"] = named[-1] if named else source.name
    result = run_finetune(from_dir, run_config, out, freeze=choice, progress=not quiet, refit=refit)
    info = result.model.fit_info
    console.print(
        metrics_table(
            f"{result.model.name} fine-tuned from {from_dir} (freeze {choice}), target test, "
            f"{result.test.users} users",
            result.test.metrics,
        )
    )
    console.print(
        f"model saved to [bold]{out}[/bold] (best epoch {info.get('best_epoch')}, "
        f"{result.train_seconds:.1f}s)"
    )


@app.command()
def version() -> None:
    """Print the evorec version."""
    console.print(__version__)


def main() -> None:
    _register_subcommands()
    try:
        app()
    except (EvorecError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, EvorecError):
            # e.g. --out in a read-only place: name the file, no traceback
            exc = EvorecError(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        message = " ".join(str(exc).split("\n"))
        # one line whatever the terminal width; markup off so that [..] in paths stays
        err_console.print(
            f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
