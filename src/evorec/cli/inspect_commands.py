"""``evorec inspect``: one user's interest timeline as a figure and as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from evorec.errors import ConfigError, UnknownIdError

console = Console()
FIGURE_FORMATS = (".png", ".svg", ".pdf")


def inspect(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    user: Annotated[str, typer.Option("--user", help="user id")],
    out: Annotated[
        Path | None, typer.Option("--out", help="the figure: .png, .svg or .pdf")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="the timeline as JSON")] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="read the user's events from this store (sqlite:///PATH or postgresql://...) "
            "instead of the model's saved histories"
        ),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option(
            help="item-table column of the categories (default: topic, category, "
            "genres, categories or attributes, the first there is)"
        ),
    ] = None,
    max_categories: Annotated[
        int, typer.Option(min=1, help="categories shown; the rest are 'other'")
    ] = 12,
    top_n: Annotated[int, typer.Option(min=1, help="top-N items read at each event")] = 10,
    window: Annotated[int, typer.Option(min=2, help="events per side of the shift test")] = 6,
    threshold: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Jensen-Shannon divergence (bits) of a shift")
    ] = 0.5,
    max_steps: Annotated[int, typer.Option(min=1, help="latest events covered")] = 300,
) -> None:
    """The interest timeline of one user: after each event, the category shares of the
    model's top-N, the observed mix of recent events, and the shift points."""
    from evorec.analytics import ItemCategories, ShiftSettings, interest_timeline
    from evorec.analytics.plot import plot_timeline
    from evorec.analytics.timeline import dataset_history
    from evorec.io import write_atomic_text
    from evorec.models.base import Recommender

    if out is None and json_out is None:
        raise ConfigError("give --out FIGURE and/or --json FILE")
    if out is not None and out.suffix.lower() not in FIGURE_FORMATS:
        raise ConfigError(f"--out {out}: name the figure with one of {', '.join(FIGURE_FORMATS)}")
    settings = ShiftSettings(window, threshold)
    if db is None:
        model = Recommender.load(model_dir)
        dataset = model.fitted_dataset()
        history = dataset_history(dataset, user)
    else:
        from evorec.serving.engine import ServedModel
        from evorec.store import EventStore

        served = ServedModel(model_dir)
        model, dataset = served.model, served.dataset
        store = EventStore(db)
        try:
            events = store.history(user)
        finally:
            store.close()
        if events.height == 0:
            raise UnknownIdError(f"unknown user id {user!r} in the store {store.display_url}")
        history = served.history(events, user_id=user)
        if history.lengths[0] == 0:
            raise UnknownIdError(f"user {user!r} has no event of an item the model knows")
    categories = ItemCategories.from_dataset(dataset, category, max_categories)
    timeline = interest_timeline(
        model, history, categories, top_n=top_n, settings=settings, max_steps=max_steps
    )
    item_ids = dataset.item_ids.to_list()
    if out is not None:
        items = dataset.items
        names = item_ids
        if items is not None and "title" in items.columns:
            names = [
                title if title is not None else item
                for title, item in zip(items.sort("item_idx")["title"], item_ids, strict=True)
            ]
        plot_timeline(timeline, out, title=f"user {user} ({model.name})", item_names=names)
        console.print(f"timeline of user {user} written to {out}")
    if json_out is not None:
        record = {"user_id": user, "model": model.name} | timeline.to_dict(item_ids)
        write_atomic_text(json_out, json.dumps(record, indent=1))
        console.print(f"timeline of user {user} written to {json_out}")
    shifts = ", ".join(str(int(timeline.positions[s]) + 1) for s in timeline.shifts) or "none"
    console.print(
        f"{len(timeline.positions)} events, {categories.n_categories} categories "
        f"({categories.column}), shifts at events: {shifts}",
        markup=False,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the ``evorec`` app."""
    if not any(command.callback is inspect for command in app.registered_commands):
        app.command()(inspect)
