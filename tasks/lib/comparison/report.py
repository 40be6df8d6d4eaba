"""The comparison of a set of finished runs, written to one folder:
table.md, table.csv, results.json (every run and every aggregate) and
metrics.png."""

import pathlib

from tasks.lib import published as published_tables
from tasks.lib.atomic import atomic_write_json
from tasks.lib.atomic import atomic_write_text
from tasks.lib.comparison.plots import plot
from tasks.lib.comparison.statistics import NOISE_RULE
from tasks.lib.comparison.statistics import aggregate
from tasks.lib.comparison.statistics import consistency_problems
from tasks.lib.comparison.statistics import seeds_by_strategy
from tasks.lib.comparison.tables import diverged_lines
from tasks.lib.comparison.tables import init_lines
from tasks.lib.comparison.tables import legend
from tasks.lib.comparison.tables import markdown_table
from tasks.lib.comparison.tables import report_header
from tasks.lib.comparison.tables import with_reference
from tasks.lib.comparison.tables import write_csv
from tasks.lib.rundir import git_commit
from tasks.lib.runs import Run

FILES = ("table.md", "table.csv", "results.json", "metrics.png")


def build_report(
    run_dirs: list[pathlib.Path],
    out_dir: pathlib.Path,
    allow_mixed: bool = False,
    published: str | None = None,
) -> dict:
    """Load runs, aggregate, and write table.md/.csv, results.json, png;
    `published` ('csl', 'lcsts') adds the article's rows for that task.
    Returns what results.json holds, and the Markdown as `markdown`."""
    everything = [Run.load(run_dir).record() for run_dir in run_dirs]
    if not everything:
        raise ValueError("no runs to compare")
    diverged = [run for run in everything if run.get("diverged")]
    runs = [run for run in everything if not run.get("diverged")]
    if not runs:
        raise ValueError(
            "every run diverged (no scores to compare): "
            + ", ".join(run["dir"] for run in diverged)
        )
    problems = consistency_problems(everything)
    if problems and not allow_mixed:
        raise ValueError("; ".join(problems) + " (--allow-mixed to go on)")
    rows = aggregate(runs)
    reference = published_tables.reference_rows(published) if published else []
    commit = git_commit()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings = "".join(f"**Warning: {p}.**\n\n" for p in problems)
    header = report_header(runs, commit)
    table = markdown_table(rows, reference)
    markdown = f"{header}\n{warnings}{table}\n{legend(rows, published)}"
    if diverged:
        markdown += "\n" + diverged_lines(diverged)
    if init_lines(runs):
        markdown += "\n" + init_lines(runs)
    atomic_write_text(out_dir / "table.md", markdown)
    write_csv(rows, out_dir / "table.csv", reference)
    plot(with_reference(rows, reference), out_dir / "metrics.png")
    results = {
        "commit": commit,
        "problems": problems,
        "seeds": seeds_by_strategy(runs),
        "noise_rule": NOISE_RULE,
        "runs": runs,
        "diverged": diverged,
        "aggregate": rows,
    }
    if published:
        results["published"] = published_section(published, reference)
    atomic_write_json(out_dir / "results.json", results)
    return {**results, "markdown": markdown}


def published_section(task: str, reference: list[dict]) -> dict:
    """The article's rows for `task` and the setting they were made in."""
    return {
        "task": task,
        "source": published_tables.SOURCE,
        "setting": {
            **published_tables.SETTING,
            "data": published_tables.DATA[task],
        },
        "rows": reference,
    }
