"""Figures of exposure-bias diagnostics, strategies side by side: mean over
seeds, with a ±std band (or error bars) where there are several seeds.

Uses the Agg canvas directly, so no global pyplot backend is touched.
"""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tasks.lib.atomic import atomic_save_figure

# Each figure's panels, left to right: (title, x label, y label).
PANELS = {
    "survival": (
        (
            "Greedy titles equal to the reference so far",
            "position t (tokens)",
            "% of titles",
        ),
        ("Teacher-forced accuracy a(t)", "position t (tokens)", "%"),
    ),
    "recovery": (
        (
            "Cross-entropy increase over the clean prefix",
            "tokens after the wrong one (j)",
            "nats",
        ),
        (
            "Accuracy drop against the clean prefix",
            "tokens after the wrong one (j)",
            "points",
        ),
    ),
    "length": (
        (
            "ROUGE-L of greedy titles by reference length",
            "reference length (characters)",
            "ROUGE-L x100",
        ),
    ),
}


def _figure(name, width=5.0):
    """The figure of `name` and its labelled panels (`PANELS`)."""
    panels = PANELS[name]
    figure = Figure(figsize=(width * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, (title, xlabel, ylabel) in zip(axes, panels):
        axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return figure, axes


def _line(axis, rows, key, scale, **style):
    """Mean over seeds with a ±std band where there are several seeds."""
    rows = [row for row in rows if row[key] is not None]
    if not rows:
        return None
    xs = [row["x"] for row in rows]
    means = np.array([scale * row[key]["mean"] for row in rows])
    (line,) = axis.plot(xs, means, marker="o", markersize=3, **style)
    stds = [row[key]["std"] for row in rows]
    if any(std is not None for std in stds):
        spread = scale * np.array([std or 0.0 for std in stds])
        axis.fill_between(
            xs,
            means - spread,
            means + spread,
            alpha=0.15,
            color=line.get_color(),
        )
    return line


def _pair(axis, rows, keys, scale, labels=(None, None), color=None):
    """Two quantities of one strategy in one colour, the second dashed;
    returns that colour (None: nothing was drawn)."""
    line = _line(axis, rows, keys[0], scale, **_style(color, labels[0]))
    color = line.get_color() if line else color
    _line(
        axis, rows, keys[1], scale, linestyle="--", **_style(color, labels[1])
    )
    return color


def _style(color, label):
    """Matplotlib's own choice (the colour cycle, no label) where None."""
    given = {"color": color, "label": label}
    return {key: value for key, value in given.items() if value is not None}


def _by_strategy(rows):
    strategies = dict.fromkeys(row["strategy"] for row in rows)
    return {
        s: [row for row in rows if row["strategy"] == s] for s in strategies
    }


def plot_survival(rows, path):
    figure, (left, right) = _figure("survival")
    for strategy, group in _by_strategy(rows).items():
        labels = (f"{strategy} S(t)", f"{strategy} Π a")
        keys = ("survival", "independent")
        color = _pair(left, group, keys, 100, labels)
        _line(right, group, "accuracy", 100, color=color, label=strategy)
    _finish(figure, (left, right), path)


def plot_recovery(rows, path):
    figure, (left, right) = _figure("recovery")
    for strategy, group in _by_strategy(rows).items():
        labels = (f"{strategy}, own token", f"{strategy}, random token")
        keys = ("own_ce_increase", "random_ce_increase")
        color = _pair(left, group, keys, 1, labels)
        keys = ("own_accuracy_drop", "random_accuracy_drop")
        _pair(right, group, keys, 100, color=color)
    for axis in (left, right):
        axis.axhline(0, color="grey", linewidth=0.8)
    _finish(figure, (left, right), path)


def plot_length(rows, path):
    figure, (axis,) = _figure("length", width=6.5)
    groups = _by_strategy(rows)
    buckets = list(dict.fromkeys(row["x"] for row in rows))
    buckets.sort(key=lambda label: int(label.split("–")[0]))
    width = 0.8 / max(len(groups), 1)
    for index, (strategy, group) in enumerate(groups.items()):
        at = {row["x"]: row for row in group}
        xs = [b for b, bucket in enumerate(buckets) if bucket in at]
        means = [100 * at[buckets[b]]["rouge_l"]["mean"] for b in xs]
        stds = [at[buckets[b]]["rouge_l"]["std"] for b in xs]
        axis.bar(
            [b + (index - (len(groups) - 1) / 2) * width for b in xs],
            means,
            width,
            yerr=[100 * (s or 0.0) for s in stds]
            if any(s is not None for s in stds)
            else None,
            capsize=2,
            label=strategy,
        )
    axis.set_xticks(range(len(buckets)), buckets)
    _finish(figure, (axis,), path, integer_x=False)


def _finish(figure, axes, path, integer_x=True):
    for axis in axes:
        axis.grid(alpha=0.3)
        if integer_x:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [axis for axis in axes if axis.get_legend_handles_labels()[0]]
    if handles:
        handles[0].legend(fontsize="small")
    atomic_save_figure(figure, path, dpi=100)


PLOTS = {
    "survival": plot_survival,
    "recovery": plot_recovery,
    "length": plot_length,
}
