"""Tables and plots of exposure-bias diagnostics, strategies side by side.

Takes the per-run results of `tasks.lib.run_diagnostics.diagnose_run`,
groups the runs by strategy as `tasks/compare.py` does (strategy name plus
options, one entry per seed), and reports every curve point as mean ±
sample std over seeds. Writes, per diagnostic (survival, recovery, length), a
Markdown table, a CSV, a JSON file and a PNG, plus `diagnostics.md` (all
three tables with their figures) and `diagnostics.json` (every run); the
figures are drawn by `tasks.lib.diagnostics_plots`.
"""

import json
import pathlib

import numpy as np

from tasks.lib.atomic import atomic_write_csv
from tasks.lib.atomic import atomic_write_text
from tasks.lib.comparison.statistics import check_unique_seeds
from tasks.lib.comparison.statistics import stats
from tasks.lib.comparison.tables import seeds_text
from tasks.lib.diagnostics_plots import PLOTS
from tasks.lib.markdown import table
from tasks.lib.rundir import git_commit

DIAGNOSTICS = ("survival", "recovery", "length")
# Quantities per diagnostic: (key in the per-run curves, or a difference).
SURVIVAL = ("survival", "independent", "accuracy", "teacher_forced", "titles")
RECOVERY = (
    "clean_ce",
    "own_ce",
    "random_ce",
    "clean_accuracy",
    "own_accuracy",
    "random_accuracy",
    "cases",
)
# Differences to the clean prefix, computed per run, then over seeds.
RECOVERY_DELTAS = {
    "own_ce_increase": ("own_ce", "clean_ce"),
    "random_ce_increase": ("random_ce", "clean_ce"),
    "own_accuracy_drop": ("clean_accuracy", "own_accuracy"),
    "random_accuracy_drop": ("clean_accuracy", "random_accuracy"),
}
LENGTH = ("rouge_l", "pairs")
QUANTITIES = {
    "survival": SURVIVAL,
    "recovery": RECOVERY + tuple(RECOVERY_DELTAS),
    "length": LENGTH,
}
DESCRIPTIONS = {
    "survival": (
        "S(t): percent of greedy titles whose first t tokens equal the "
        "reference's, among titles at least t tokens long (end token "
        "included). Π(t): the product of teacher-forced accuracies a(1)..a(t),"
        " what S(t) would be if errors at different positions were "
        "independent. S above Π: mistakes concentrate in a few hard titles; "
        "S below Π: they are spread out, each title holding its own few. "
        "What follows a mistake is measured by recovery. Mean ± std over "
        "seeds."
    ),
    "recovery": (
        "Cross-entropy (nats) and accuracy (%) of reference token k+j after "
        "the reference prefix (clean), and after the same prefix with token k "
        "replaced by the model's own most likely wrong token (own) or a "
        "uniformly random one (random), pooled over every position k of every"
        " title. A model robust to its own mistakes stays near clean. Mean ± "
        "std over seeds."
    ),
    "length": (
        "ROUGE-L (x100, character level, as the published scoring) of the "
        "greedy titles, by reference length in characters. Mean ± std over "
        "seeds."
    ),
}


# Aggregation ------------------------------------------------------------------


def aggregate(results, length_edges=None):
    """{'survival'|'recovery'|'length': rows}; a row is one strategy at one
    x (position, offset or length bucket) with seed statistics."""
    check_unique_seeds(results)
    buckets = length_buckets(
        [length for run in results for length, _ in run["length"]["pairs"]],
        length_edges,
    )
    per_run = {
        "survival": [_points(run["survival"], "position") for run in results],
        "recovery": [_recovery_points(run) for run in results],
        "length": [_length_points(run, buckets) for run in results],
    }
    return {
        name: _rows(results, per_run[name], quantities)
        for name, quantities in QUANTITIES.items()
    }


def _points(curves, axis):
    """{x: {quantity: value}} from parallel lists."""
    keys = [key for key in curves if key != axis]
    return {
        x: {key: curves[key][index] for key in keys}
        for index, x in enumerate(curves[axis])
    }


def _recovery_points(run):
    points = _points(run["recovery"], "offset")
    for values in points.values():
        for name, (left, right) in RECOVERY_DELTAS.items():
            if values[left] is not None and values[right] is not None:
                values[name] = values[left] - values[right]
            else:
                values[name] = None
    return points


def _length_points(run, buckets):
    """Mean ROUGE-L of each bucket that holds pairs of this run."""
    points = {}
    for low, high in buckets:
        scores = [
            score
            for length, score in run["length"]["pairs"]
            if low <= length <= high
        ]
        if scores:
            label = f"{low}" if low == high else f"{low}–{high}"
            points[label] = {
                "rouge_l": float(np.mean(scores)),
                "pairs": len(scores),
            }
    return points


def length_buckets(lengths, edges=None):
    """Inclusive (low, high) ranges: up to each edge, then the rest.

    Without edges, the pooled quartiles of the reference lengths, so that
    every run is cut at the same lengths.
    """
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    if edges is None:
        quartiles = np.quantile(lengths, [0.25, 0.5, 0.75], method="lower")
        edges = [int(q) for q in quartiles]
    edges = sorted({int(edge) for edge in edges if low <= edge < high})
    buckets, start = [], low
    for edge in edges:
        buckets.append((start, edge))
        start = edge + 1
    buckets.append((start, high))
    return buckets


def _rows(results, points, quantities):
    """Statistics over the seeds of each strategy at each x."""
    rows = []
    for label in dict.fromkeys(run["label"] for run in results):
        group = [p for run, p in zip(results, points) if run["label"] == label]
        seeds = [r["seed"] for r in results if r["label"] == label]
        xs = list(dict.fromkeys(x for p in group for x in p))
        if all(isinstance(x, int) for x in xs):
            xs.sort()
        for x in xs:
            present = [(s, p[x]) for s, p in zip(seeds, group) if x in p]
            row = {
                "strategy": label,
                "x": x,
                "n": len(present),
                "seeds": [s for s, _ in present],
            }
            for key in quantities:
                values = [v[key] for _, v in present if v.get(key) is not None]
                row[key] = stats(values) if values else None
            rows.append(row)
    return rows


# Tables -----------------------------------------------------------------------


def _cell(stats, scale=100.0, digits=1):
    """'mean ± std' (std only with two seeds or more)."""
    if stats is None:
        return "–"
    text = f"{scale * stats['mean']:.{digits}f}"
    if stats["std"] is not None:
        text += f" ± {scale * stats['std']:.{digits}f}"
    return text


def _count(stats):
    """A count that may differ between seeds: '120' or '118–121'."""
    if stats is None:
        return "–"
    low, high = min(stats["values"]), max(stats["values"])
    return f"{low}" if low == high else f"{low}–{high}"


def _table(head, lines):
    return "\n".join(table(head, lines))


def survival_markdown(rows):
    """Rows = positions; per strategy S(t) and Π(t) in percent."""
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    head = ["t", "titles"]
    for strategy in strategies:
        head += [f"{strategy} S", f"{strategy} Π"]
    lines = []
    for x in sorted({row["x"] for row in rows}):
        at = {row["strategy"]: row for row in rows if row["x"] == x}
        counts = [at[s]["titles"] for s in strategies if s in at]
        line = [x, _count(_merge(counts))]
        for strategy in strategies:
            row = at.get(strategy)
            line += [
                _cell(row and row["survival"]),
                _cell(row and row["independent"]),
            ]
        lines.append(line)
    return _table(head, lines)


def _merge(stats_list):
    """Pool the values of several statistics (for a count range)."""
    values = [v for stats in stats_list if stats for v in stats["values"]]
    return {"values": values} if values else None


def recovery_markdown(rows):
    """One line per strategy and offset: absolute CE and accuracy."""
    head = [
        "Strategy",
        "j",
        "cases",
        "CE clean",
        "CE own",
        "CE random",
        "acc clean",
        "acc own",
        "acc random",
    ]
    lines = []
    for row in rows:
        line = [row["strategy"], row["x"], _count(row["cases"])]
        line += [
            _cell(row[f"{kind}_ce"], scale=1.0, digits=3)
            for kind in ("clean", "own", "random")
        ]
        line += [
            _cell(row[f"{kind}_accuracy"])
            for kind in ("clean", "own", "random")
        ]
        lines.append(line)
    return _table(head, lines)


def length_markdown(rows):
    """Rows = length buckets; per strategy ROUGE-L x100."""
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    buckets = list(dict.fromkeys(row["x"] for row in rows))
    buckets.sort(key=lambda label: int(label.split("–")[0]))
    head = ["Reference length (chars)", "pairs", *strategies]
    lines = []
    for bucket in buckets:
        at = {row["strategy"]: row for row in rows if row["x"] == bucket}
        counts = _merge([at[s]["pairs"] for s in strategies if s in at])
        line = [bucket, _count(counts)]
        line += [
            _cell(at[s]["rouge_l"], digits=2) if s in at else "–"
            for s in strategies
        ]
        lines.append(line)
    return _table(head, lines)


MARKDOWN = {
    "survival": survival_markdown,
    "recovery": recovery_markdown,
    "length": length_markdown,
}
TITLES = {
    "survival": "Survival of greedy titles",
    "recovery": "Recovery after one wrong token",
    "length": "ROUGE-L by reference length",
}


def write_csv(rows, quantities, path):
    """One line per strategy and x; fractions and nats, not x100."""
    fields = ["strategy", "x", "n", "seeds"]
    for key in quantities:
        fields += [f"{key}_mean", f"{key}_std"]
    records = []
    for row in rows:
        record = {key: row[key] for key in ("strategy", "x", "n")}
        record["seeds"] = " ".join(map(str, row["seeds"]))
        for key in quantities:
            stats = row.get(key) or {}
            record[f"{key}_mean"] = stats.get("mean", "")
            std = stats.get("std")
            record[f"{key}_std"] = "" if std is None else std
        records.append(record)
    atomic_write_csv(path, fields, records)


# The report -------------------------------------------------------------------


def header(results, options, commit):
    """Provenance and the checks that would make the numbers suspect."""
    lines = ["# Exposure-bias diagnostics", ""]
    lines.append(f"- Report commit: `{commit}`")
    lines.append(f"- Seeds: {seeds_text(results)}")
    lines.append(
        f"- Options: span {options['span']} tokens after the wrong one; "
        f"positions per title {options['max_positions'] or 'all'}; random "
        f"tokens seed {options['seed']}; test pairs "
        f"{options['limit'] or 'all'}"
    )
    for run in results:
        lines.append(f"- `{run['dir']}`: {_run_note(run)}")
    return "\n".join(lines) + "\n"


def _run_note(run):
    """Test size, and the agreement checks of one run."""
    note = f"{run['label']} seed {run['seed']}, {run['titles']} test titles"
    if "greedy_equal_to_run" in run:
        note += (
            f"; greedy titles equal to its predictions-beam1.tsv: "
            f"{100 * run['greedy_equal_to_run']:.1f}%"
        )
    curves = run["survival"]
    gap = max(
        abs(a - b) for a, b in zip(curves["survival"], curves["teacher_forced"])
    )
    if gap > 0:
        note += (
            f"; **greedy and teacher-forced passes disagree** (survival "
            f"differs by up to {100 * gap:.1f} points: ties or numerics)"
        )
    return note


def sections(rows, prefix="", level=2):
    """Title, description, table and figure of each diagnostic; figure
    links start with `prefix` (the PNGs' folder seen from the Markdown)."""
    marks = "#" * level
    return "\n".join(
        f"{marks} {TITLES[name]}\n\n{DESCRIPTIONS[name]}\n\n"
        f"{MARKDOWN[name](rows[name])}\n\n"
        f"![{TITLES[name]}]({prefix}{name}.png)\n"
        for name in DIAGNOSTICS
    )


def write_report(results, out_dir, options, length_edges=None, commit=None):
    """Every table, CSV, JSON and PNG into `out_dir`; returns the Markdown
    of `diagnostics.md` (figure links relative to `out_dir`)."""
    if not results:
        raise ValueError("no runs to diagnose")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = commit or git_commit()
    rows = aggregate(results, length_edges)
    for name in DIAGNOSTICS:
        table = MARKDOWN[name](rows[name])
        text = f"## {TITLES[name]}\n\n{DESCRIPTIONS[name]}\n\n{table}\n"
        atomic_write_text(out_dir / f"{name}.md", text)
        write_csv(rows[name], QUANTITIES[name], out_dir / f"{name}.csv")
        _write_json(
            out_dir / f"{name}.json",
            {"description": DESCRIPTIONS[name], "rows": rows[name]},
        )
        PLOTS[name](rows[name], out_dir / f"{name}.png")
    markdown = header(results, options, commit) + "\n" + sections(rows)
    atomic_write_text(out_dir / "diagnostics.md", markdown)
    _write_json(
        out_dir / "diagnostics.json",
        {
            "commit": commit,
            "options": options,
            "runs": results,
            "aggregate": rows,
        },
    )
    return markdown


def _write_json(path, value):
    atomic_write_text(
        path, json.dumps(value, ensure_ascii=False, indent=2) + "\n"
    )
