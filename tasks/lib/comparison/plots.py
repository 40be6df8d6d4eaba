"""The comparison as a figure: one panel per metric, x = beam size."""

import pathlib

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks.lib.atomic import atomic_save_figure
from tasks.lib.comparison.statistics import COLUMNS
from tasks.lib.comparison.statistics import group_name


def plot(rows: list[dict], path: pathlib.Path) -> None:
    """One panel per metric; error bars are seed std where there are seeds;
    published rows dashed, with open markers.

    Uses the Agg canvas directly, so no global pyplot backend is touched.
    """
    figure = Figure(figsize=(4 * len(COLUMNS), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(COLUMNS))
    beams = sorted({row["beam"] for row in rows})
    strategies = list(dict.fromkeys(group_name(row) for row in rows))
    for axis, (key, title) in zip(axes, COLUMNS):
        for strategy in strategies:
            group = [r for r in rows if group_name(r) == strategy]
            _plot_strategy(axis, group, key, strategy)
        axis.set(title=title, xlabel="beam size", xticks=beams)
        axis.set_ylabel("score x100")
        axis.grid(alpha=0.3)
    axes[0].legend()
    atomic_save_figure(figure, path, dpi=100)


def _plot_strategy(axis, rows: list[dict], key: str, label: str) -> None:
    """One line; error bars only when some beam has several seeds."""
    means = [100 * row[key]["mean"] for row in rows]
    errors = [100 * (row[key]["std"] or 0.0) for row in rows]
    published = any(row.get("published") for row in rows)
    axis.errorbar(
        [row["beam"] for row in rows],
        means,
        yerr=errors if any(row[key]["std"] for row in rows) else None,
        marker="o",
        capsize=3,
        label=label,
        linestyle="--" if published else "-",
        markerfacecolor="none" if published else None,
    )
