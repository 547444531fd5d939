"""``evorec explain``: which of a user's past events drove a recommendation."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from evorec.data.dataset import Dataset

if TYPE_CHECKING:
    from evorec.models.explain import Explanation

_out = Console()


def _titles(dataset: Dataset, ids: list[Any]) -> dict[Any, str]:
    """Item titles by original id, where the item table has a ``title`` column."""
    items = dataset.items
    if items is None or "title" not in items.columns:
        return {}
    rows = items.select(pl.col("item_id").cast(dataset.item_ids.dtype), "title")
    rows = rows.filter(pl.col("item_id").is_in(ids))
    return dict(rows.iter_rows())


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _print(explanation: Explanation, dataset: Dataset) -> None:
    titles = _titles(dataset, [explanation.item_id, *(e.item_id for e in explanation.events)])

    def name(item_id: Any) -> str:
        title = titles.get(item_id)
        return f"{item_id} ({title})" if title else str(item_id)

    _out.print(
        f"user {explanation.user_id}: item {name(explanation.item_id)}, "
        f"score {explanation.score:.4f}",
        markup=False,
        highlight=False,
    )
    table = Table("rank", "item", "time", "score change", "attention", "shared attributes")
    for rank, event in enumerate(explanation.events, 1):
        table.add_row(
            str(rank),
            name(event.item_id),
            _when(event.timestamp),
            f"{event.score_change:+.4f}",
            "" if event.attention is None else f"{event.attention:.3f}",
            ", ".join(event.shared_attributes),
        )
    _out.print(table)


def explain(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a trained model directory")],
    user: Annotated[str, typer.Option("--user", help="user id")],
    item: Annotated[
        str | None, typer.Option("--item", help="item id (default: the top recommendation)")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="how many events")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Which of a user's past events drive a recommendation: each event's score change
    when it is left out (occlusion), and its attention share for Transformer models."""
    from evorec.models.base import Recommender  # torch loads only when a command runs

    model = Recommender.load(model_dir)
    explanation = model.explain(user, item=item, top=top)
    if as_json:
        typer.echo(json.dumps(explanation.to_dict()))
    else:
        _print(explanation, model.fitted_dataset())
