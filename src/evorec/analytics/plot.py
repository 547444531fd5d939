"""A timeline as a matplotlib figure: the model's category shares stacked over the events,
the observed mix of recent events below, shift points marked, the latest events listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evorec.analytics.categories import category_colors
from evorec.analytics.timeline import Timeline
from evorec.io import write_atomic

RECENT_EVENTS = 12  # events listed beside the chart


def plot_timeline(
    timeline: Timeline, path: str | Path, *, title: str, item_names: list[Any]
) -> Path:
    """Write the figure of ``timeline`` to ``path`` (PNG, SVG or PDF by its extension),
    atomically; ``item_names[i]`` names internal item ``i`` in the list of events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = timeline.categories.names
    colors = category_colors(len(names))
    x = timeline.positions + 1  # events seen
    fig = plt.figure(figsize=(13, 6.5))
    grid = fig.add_gridspec(2, 2, width_ratios=[3.2, 1], height_ratios=[2, 1], wspace=0.05)
    model_ax = fig.add_subplot(grid[0, 0])
    observed_ax = fig.add_subplot(grid[1, 0], sharex=model_ax)
    events_ax = fig.add_subplot(grid[:, 1])
    panels = (
        (model_ax, timeline.model_share, f"model: category share of the top {timeline.top_n}"),
        (observed_ax, timeline.observed, f"observed: last {timeline.settings.window} events"),
    )
    for ax, shares, label in panels:
        ax.stackplot(x, shares.T, colors=colors, labels=names, step="post", linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_xlim(x[0], x[-1] + 1)
        ax.set_ylabel("share")
        ax.set_title(label, fontsize=10, loc="left")
        for shift in timeline.shifts:
            ax.axvline(x[shift], color="black", linestyle="--", linewidth=1)
    observed_ax.set_xlabel("events seen")
    model_ax.tick_params(labelbottom=False)
    handles, labels = model_ax.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(names), 7), fontsize=8, frameon=False
    )
    events_ax.axis("off")
    events_ax.set_title("latest events", fontsize=10, loc="left")
    lines = []
    for t in range(len(x) - 1, max(len(x) - RECENT_EVENTS, 0) - 1, -1):
        item = int(timeline.items[t])
        mark = "▶ " if t in timeline.shifts else "   "
        category = ", ".join(timeline.categories.labels(item)[:2])
        lines.append(f"{mark}{x[t]:>4}  {_short(item_names[item])}  [{_short(category, 22)}]")
    events_ax.text(
        0,
        0.98,
        "\n".join(lines),
        va="top",
        family="monospace",
        fontsize=7.5,
        transform=events_ax.transAxes,
    )
    shifts = ", ".join(str(x[s]) for s in timeline.shifts) or "none"
    fig.suptitle(f"{title}  (shifts at events: {shifts})", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.16, hspace=0.25)
    path = Path(path)
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format=path.suffix[1:] or "png"))
    finally:
        plt.close(fig)
    return path


def _short(value: Any, width: int = 28) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
