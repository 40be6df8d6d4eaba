"""The comparison as text: the Markdown table, its legend, the provenance
header, and the CSV."""

import json
import pathlib

from tasks.lib import published as published_tables
from tasks.lib.atomic import atomic_write_csv
from tasks.lib.comparison.statistics import COLLAPSED_MARK
from tasks.lib.comparison.statistics import COLUMNS
from tasks.lib.comparison.statistics import NOISE_MARK
from tasks.lib.comparison.statistics import NOISE_RULE
from tasks.lib.comparison.statistics import comparable
from tasks.lib.comparison.statistics import seeds_by_strategy
from tasks.lib.comparison.statistics import shown
from tasks.lib.environment import summary_line
from tasks.lib.markdown import table
from tasks.lib.metrics import SCORING


def format_cell(cell: dict, n: int) -> str:
    """'**mean ± std**' for the best, 'mean ± std †' within noise."""
    text = shown(cell["mean"])
    if n > 1:
        text += f" ± {shown(cell['std'])}"
    if cell["best"]:
        return f"**{text}**"
    return f"{text} {NOISE_MARK}" if cell["within_noise"] else text


def markdown_table(rows: list[dict], reference: list[dict] = ()) -> str:
    """Rows grouped by beam size; scores x100 with two decimals. The
    `reference` rows (published figures) close each beam block."""
    families = has_families(rows)
    titles = ["Beam", "Strategy", "Seeds"] + [title for _, title in COLUMNS]
    if families:
        titles.insert(2, "Family")
    lines = []
    for row in with_reference(rows, reference):
        if row.get("published"):
            cells = [shown(row[key]["mean"]) for key, _ in COLUMNS]
            seeds = f"{row['n']} runs (published)"
        else:
            cells = [format_cell(row[key], row["n"]) for key, _ in COLUMNS]
            seeds = str(row["n"])
        strategy = row["strategy"]
        if row.get("collapsed"):
            strategy += f" {COLLAPSED_MARK}"
        line = [row["beam"], strategy, seeds, *cells]
        if families:
            line.insert(2, row.get("family", "bert"))
        lines.append(line)
    return "\n".join(table(titles, lines)) + "\n"


def has_families(rows: list[dict]) -> bool:
    """A Family column when some run is not a BERT (RoFormer, NEZHA, mT5):
    a table of BERT runs alone keeps its columns."""
    return any(row.get("family", "bert") != "bert" for row in rows)


def diverged_lines(runs: list[dict]) -> str:
    """The runs that diverged (no scores, so in no row), one a line."""
    if not runs:
        return ""
    lines = ["Diverged (no scores; not in the table):", ""]
    lines += [
        f"- `{run['dir']}` ({run['label']}, seed {run['seed']}): "
        f"diverged at {run['diverged'].get('where', '?')}"
        f" (loss {run['diverged'].get('loss', '?')})"
        for run in runs
    ]
    return "\n".join(lines) + "\n"


def init_lines(runs: list[dict]) -> str:
    """Each warm-started run (--init) beside the run it started from:
    test scores x100 at the smallest beam both scored."""
    started = [run for run in runs if run.get("init")]
    if not started:
        return ""
    titles = ["Run", "Seed", "Started from", "Beam"]
    titles += [f"{title} (start → end)" for _, title in COLUMNS]
    lines = []
    for run in started:
        init = run["init"]
        beams = sorted(set(run["test"]) & set(init.get("test") or {}), key=int)
        if not beams:
            continue
        end, start = run["test"][beams[0]], init["test"][beams[0]]
        cells = [
            f"{shown(start[key])} → {shown(end[key])}" for key, _ in COLUMNS
        ]
        where = f"`{init['run']}` ({init['label']}, seed {init['seed']})"
        lines.append([run["label"], run["seed"], where, beams[0], *cells])
    if not lines:
        return ""
    head = "Warm-started runs (--init), beside the run they started from:\n\n"
    return head + "\n".join(table(titles, lines)) + "\n"


def with_reference(rows: list[dict], reference: list[dict]) -> list[dict]:
    """Measured rows, each beam block followed by its reference rows."""
    beams = sorted({row["beam"] for row in [*rows, *reference]})
    return [
        row
        for beam in beams
        for group in (rows, reference)
        for row in group
        if row["beam"] == beam
    ]


def legend(rows: list[dict], published: str | None = None) -> str:
    """What the numbers and marks mean; seed statistics only when used."""
    bold = "**Bold**: best of its beam block."
    if not any(row["n"] > 1 for row in rows):
        text = f"Scores x100, one seed each. {bold}\n"
    else:
        text = (
            f"Scores x100, mean ± sample std (ddof=1) over seeds. {bold}\n\n"
            f"{NOISE_RULE}\n"
        )
    collapsed = [row for row in rows if row.get("collapsed")]
    if collapsed:
        text += (
            f"\n{COLLAPSED_MARK}: the test titles collapsed (fewer than half "
            "distinct) in "
            + "; ".join(
                f"{row['collapsed']} of {row['n']} runs of {row['strategy']} "
                f"at beam {row['beam']}"
                for row in collapsed
            )
            + ".\n"
        )
    if published:
        text += "\n" + published_legend(published)
    return text


def published_legend(task: str) -> str:
    """Where the "(published)" rows come from and what they were."""
    setting = published_tables.SETTING
    return (
        f"Rows marked (published): figures of {published_tables.SOURCE}, "
        f"each the mean of {published_tables.RUNS} runs, copied, not "
        f"measured here; bold and {NOISE_MARK} compare measured rows only. "
        f"Their setting: {setting['model']}, "
        f"{published_tables.DATA[task]}, maxlen {setting['maxlen']}, batch "
        f"{setting['batch_size']}, Adam {setting['lr']:g}, "
        f"{setting['epochs']} epochs, {setting['selection']}.\n"
    )


def report_header(runs: list[dict], commit: str) -> str:
    """Provenance: commit, model, data files, seeds and scoring."""
    lines = ["# Exposure-bias strategy comparison", ""]
    lines.append(f"- Report commit: `{commit}`")
    commits = sorted({str(run.get("commit", "unknown")) for run in runs})
    lines.append("- Run commits: " + ", ".join(f"`{c}`" for c in commits))
    for model, where in _variants(runs, "model"):
        lines.append(f"- Model: {model}{where}")
    for environment, where in _variants(runs, "environment"):
        lines.append(f"- Environment{where}: {_environment_text(environment)}")
    lines.append(f"- Seeds: {seeds_text(runs)}")
    for data, where in _variants(runs, "data"):
        lines.append(f"- Data{where}:")
        lines += [f"  - {line}" for line in _data_lines(data)]
    for scoring, where in _variants(runs, "scoring"):
        lines.append(f"- Scoring{where}: {_scoring_text(scoring)}")
    lines.append(
        "- Runs: "
        + ", ".join(
            f"`{run['dir']}` (best epoch {run.get('best_epoch', '?')})"
            for run in runs
        )
    )
    return "\n".join(lines) + "\n"


def _environment_text(environment) -> str:
    """Backend and versions, devices and precision a run trained with."""
    if not isinstance(environment, dict):
        return "not recorded by the runs"
    keys = ("backend", "backend_version", "keras_version", "python")
    return summary_line(
        {key: environment.get(key, "?") for key in (*keys, "precision")}
        | {"devices": environment.get("devices") or ["?"]}
    )


def seeds_text(runs: list[dict]) -> str:
    """'baseline: 0, 1, 2; gp: 0'."""
    return "; ".join(
        f"{strategy}: {', '.join(map(str, seeds))}"
        for strategy, seeds in seeds_by_strategy(runs).items()
    )


def _variants(runs: list[dict], field: str) -> list[tuple]:
    """Distinct values of a field, each with ' (runs ...)' when mixed."""
    dirs = {}
    for run in runs:
        value = run.get(field, "unknown")
        key = json.dumps(comparable(run, field), sort_keys=True)
        dirs.setdefault(key, (value, []))[1].append(run["dir"])
    if len(dirs) == 1:
        return [(value, "") for value, _ in dirs.values()]
    return [(value, f" (runs {', '.join(d)})") for value, d in dirs.values()]


def _data_lines(data) -> list[str]:
    """One line per split (path, sha256, pairs) or other entry."""
    if not isinstance(data, dict):
        return [str(data)]
    return [_data_line(name, info) for name, info in data.items()]


def _data_line(name: str, info) -> str:
    """A file as path, sha256 and pairs; a split recipe without its seed."""
    if isinstance(info, dict) and "path" in info:
        return (
            f"{name}: `{info['path']}` sha256 `{info.get('sha256', 'none')}`"
            f", {info.get('pairs', '?')} pairs"
        )
    if isinstance(info, dict) and "seed" in info:
        recipe = {key: v for key, v in info.items() if key != "seed"}
        return f"{name}: {json.dumps(recipe)}, seed = each run's seed"
    return f"{name}: {json.dumps(info, ensure_ascii=False)}"


def _scoring_text(scoring) -> str:
    """The summary line of a SCORING dict, or the dict as JSON."""
    if isinstance(scoring, dict) and "summary" in scoring:
        return scoring["summary"]
    if scoring == "unknown":
        return f"not recorded by the runs; this toolkit: {SCORING['summary']}"
    return json.dumps(scoring, ensure_ascii=False)


def write_csv(
    rows: list[dict], path: pathlib.Path, reference: list[dict] = ()
) -> None:
    """Machine-readable table: fractions, not x100; `source` says whether
    a row was measured or published (n: runs averaged)."""
    keys = [key for key, _ in COLUMNS] + ["seconds"]
    fields = ["beam", "strategy", "family", "n", "seeds"]
    for key in keys:
        fields += [f"{key}_mean", f"{key}_std"]
    fields += ["collapsed", "source"]
    records = []
    for row in with_reference(rows, reference):
        record = {name: row[name] for name in ("beam", "strategy", "n")}
        record["family"] = row.get("family", "bert")
        record["source"] = "published" if row.get("published") else "measured"
        record["seeds"] = " ".join(map(str, row["seeds"]))
        record["collapsed"] = row.get("collapsed", "")
        for key in keys:
            stats = row.get(key, {})
            record[f"{key}_mean"] = stats.get("mean", "")
            std = stats.get("std")
            record[f"{key}_std"] = "" if std is None else std
        records.append(record)
    atomic_write_csv(path, fields, records)
