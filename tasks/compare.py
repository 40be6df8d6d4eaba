"""Compare exposure-bias strategies over seeds and beam sizes.

Reads the `results.json` that `tasks/csl_title.py --out DIR` writes (one
directory per strategy and seed), averages each strategy over its seeds and
reports one block per beam size, as the exposure-bias article lays out its
table. The report names the data files (with sha256), model, seeds, scoring
method and commit, so that its numbers can be compared later.

Usage:

    # Report on finished runs
    python tasks/compare.py runs/baseline-seed0 runs/gp-seed0 --out comparison

    # Train and evaluate every strategy x seed first, then report; everything
    # after `--` goes to tasks/csl_title.py unchanged. Finished runs (their
    # results.json exists) are skipped, so an interrupted comparison resumes.
    python tasks/compare.py --run --strategies baseline replace gp \\
        --seeds 0 1 2 --workdir runs -- --epochs 3

Writes to --out: table.md, table.csv, results.json (every run and every
aggregate) and metrics.png (one panel per metric, x = beam size); with
--diagnostics also diagnostics/ (see tasks/diagnose.py), whose tables and
figures table.md then shows. With --published csl (or lcsts) the exposure-
bias article's figures join each beam block as reference rows, labelled
"(published)" and dashed in the plot; they take no part in the bold and
noise marks, which compare measured runs only.
"""

import argparse
import csv
import json
import math
import pathlib
import statistics
import subprocess
import sys

from tasks.lib import published as published_tables
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.environment import summary_line
from tasks.lib.metrics import SCORING
from tasks.lib.rundir import git_commit
from tasks.lib.runs import run_name

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# (key in results.json, column title), in the article's column order.
COLUMNS = (
    ("rouge-l", "Rouge-L"),
    ("rouge-1", "Rouge-1"),
    ("rouge-2", "Rouge-2"),
    ("bleu", "BLEU"),
)
NOISE_MARK = "†"
NOISE_RULE = (
    f"{NOISE_MARK}: the gap to the block's best mean is at most one pooled "
    "seed std, sqrt(((n1-1)s1^2 + (n2-1)s2^2) / (n1+n2-2)), of the two "
    "entries (defined once either has two seeds): one more seed could swap "
    "them. A noise heuristic, not a significance test."
)
# Fields that must agree across runs, or the table compares unlike things.
SHARED_FIELDS = ("data", "model", "scoring")


def load_run(run_dir: pathlib.Path) -> dict:
    """One run's results.json, checked so that errors name the file."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir}: not a finished run (no results.json); expected a "
            "directory a task script wrote with --out"
        )
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg})"
        ) from None
    if not isinstance(run, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for key in ("strategy", "seed", "test"):
        if key not in run:
            raise ValueError(f"{path}: missing key {key!r}")
    if not isinstance(run["test"], dict) or not run["test"]:
        raise ValueError(f"{path}: 'test' holds no beam size")
    for beam, scores in run["test"].items():
        if not beam.isdigit():
            raise ValueError(f"{path}: test key {beam!r} is not a beam size")
        if not isinstance(scores, dict):
            raise ValueError(f"{path}: test[{beam!r}] is not a dict of scores")
        missing = [key for key, _ in COLUMNS if key not in scores]
        if missing:
            raise ValueError(f"{path}: test[{beam!r}] lacks {missing}")
    # Keys as str(int) so that "01" and "1" name one beam size.
    test = {str(int(beam)): v for beam, v in run["test"].items()}
    return {**run, "test": test, "dir": str(run_dir), "label": _label(run)}


# Run options (results.json "options") and the value that leaves a run as
# it was before they existed: only other values name a variant.
OPTION_DEFAULTS = {
    "label_smoothing": 0.0,
    "ema": None,
    "length_penalty": None,
    "min_length": 1,
}


def _label(run: dict) -> str:
    """Strategy name plus the strategy options given on the command line
    and the run options that differ from their defaults (--ema,
    --label-smoothing, --length-penalty, --min-length): other options are
    another strategy."""
    # Runs record every option (defaults included) and those given; older
    # runs recorded only those given, as "strategy_options".
    options = run.get("strategy_options_given", run.get("strategy_options"))
    options = dict(options or {})
    for key, value in (run.get("options") or {}).items():
        if value != OPTION_DEFAULTS.get(key):
            options[key] = value
    if not options:
        return run["strategy"]
    listed = ", ".join(f"{key}={value}" for key, value in options.items())
    return f"{run['strategy']} ({listed})"


def aggregate(runs: list[dict]) -> list[dict]:
    """Mean and std over seeds per strategy and beam, ordered in blocks.

    Blocks follow beam size; strategies keep the order they first appear
    in, so the caller decides (baseline first, as the article).
    """
    _check_unique_seeds(runs)
    strategies = list(dict.fromkeys(run["label"] for run in runs))
    beams = sorted({int(beam) for run in runs for beam in run["test"]})
    rows = []
    for beam in beams:
        for strategy in strategies:
            group = [
                run
                for run in runs
                if run["label"] == strategy and str(beam) in run["test"]
            ]
            if group:
                rows.append(_row(beam, strategy, group))
    _mark_blocks(rows)
    return rows


def _check_unique_seeds(runs: list[dict]) -> None:
    """Two runs of one strategy and seed would be counted twice."""
    seen = {}
    for run in runs:
        key = (run["label"], run["seed"])
        if key in seen:
            raise ValueError(
                f"strategy {key[0]!r} seed {key[1]} in both {seen[key]} "
                f"and {run['dir']}"
            )
        seen[key] = run["dir"]


def _row(beam: int, strategy: str, group: list[dict]) -> dict:
    """Statistics of one strategy at one beam size."""
    tests = [run["test"][str(beam)] for run in group]
    row = {
        "beam": beam,
        "strategy": strategy,
        "seeds": [run["seed"] for run in group],
        "n": len(group),
    }
    for key, _ in COLUMNS:
        row[key] = _stats([test[key] for test in tests])
    if all("seconds" in test for test in tests):
        row["seconds"] = _stats([test["seconds"] for test in tests])
    return row


def _stats(values: list[float]) -> dict:
    """Mean and sample std (ddof=1); std is None for a single seed."""
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def _mark_blocks(rows: list[dict]) -> None:
    """Flag each block's best cell per column, and cells within noise."""
    for beam in {row["beam"] for row in rows}:
        block = [row for row in rows if row["beam"] == beam]
        for key, _ in COLUMNS:
            best = max(block, key=lambda row: row[key]["mean"])
            for row in block:
                cell = row[key]
                # Ties as displayed are all best: readers see equal numbers.
                cell["best"] = _shown(cell["mean"]) == _shown(best[key]["mean"])
                cell["within_noise"] = not cell["best"] and _within_noise(
                    cell, row["n"], best[key], best["n"]
                )


def _within_noise(cell: dict, n: int, best: dict, n_best: int) -> bool:
    """Is the gap to the best at most one pooled seed std of the two?"""
    if n + n_best <= 2:
        return False
    sum_squares = sum(
        (count - 1) * (stats["std"] or 0.0) ** 2
        for stats, count in ((cell, n), (best, n_best))
    )
    pooled = math.sqrt(sum_squares / (n + n_best - 2))
    return best["mean"] - cell["mean"] <= pooled


def _shown(fraction: float) -> str:
    """A score as the table shows it: x100, two decimals."""
    return f"{100 * fraction:.2f}"


def format_cell(cell: dict, n: int) -> str:
    """'**mean ± std**' for the best, 'mean ± std †' within noise."""
    text = _shown(cell["mean"])
    if n > 1:
        text += f" ± {_shown(cell['std'])}"
    if cell["best"]:
        return f"**{text}**"
    return f"{text} {NOISE_MARK}" if cell["within_noise"] else text


def markdown_table(rows: list[dict], reference: list[dict] = ()) -> str:
    """Rows grouped by beam size; scores x100 with two decimals. The
    `reference` rows (published figures) close each beam block."""
    titles = ["Beam", "Strategy", "Seeds"] + [title for _, title in COLUMNS]
    lines = [_md_line(titles), _md_line(["---"] * len(titles))]
    for row in with_reference(rows, reference):
        if row.get("published"):
            cells = [_shown(row[key]["mean"]) for key, _ in COLUMNS]
            seeds = f"{row['n']} runs (published)"
        else:
            cells = [format_cell(row[key], row["n"]) for key, _ in COLUMNS]
            seeds = str(row["n"])
        lines.append(
            _md_line([str(row["beam"]), row["strategy"], seeds] + cells)
        )
    return "\n".join(lines) + "\n"


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


def _md_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


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
    lines.append(f"- Seeds: {_seeds_text(runs)}")
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
    return summary_line(
        {
            key: environment.get(key, "?")
            for key in (
                "backend",
                "backend_version",
                "keras_version",
                "python",
                "precision",
            )
        }
        | {"devices": environment.get("devices") or ["?"]}
    )


def _seeds_text(runs: list[dict]) -> str:
    """'baseline: 0, 1, 2; gp: 0'."""
    return "; ".join(
        f"{strategy}: {', '.join(map(str, seeds))}"
        for strategy, seeds in seeds_by_strategy(runs).items()
    )


def seeds_by_strategy(runs: list[dict]) -> dict[str, list]:
    """Seeds of each strategy, in the order strategies appear."""
    seeds = {}
    for run in runs:
        seeds.setdefault(run["label"], []).append(run["seed"])
    return {strategy: sorted(values) for strategy, values in seeds.items()}


def _variants(runs: list[dict], field: str) -> list[tuple]:
    """Distinct values of a field, each with ' (runs ...)' when mixed."""
    dirs = {}
    for run in runs:
        value = run.get(field, "unknown")
        key = json.dumps(_comparable(run, field), sort_keys=True)
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


def consistency_problems(runs: list[dict]) -> list[str]:
    """Fields that differ across runs: such numbers are not comparable.

    Data are compared by checksum, not path, so a moved file still agrees.
    """
    problems = []
    for field in SHARED_FIELDS:
        values = {
            json.dumps(_comparable(run, field), sort_keys=True) for run in runs
        }
        if len(values) > 1:
            problems.append(f"runs differ in {field!r}")
    return problems


def _comparable(run: dict, field: str):
    """What must agree: files by checksum (a moved file still agrees), and
    a split recipe without its seed, which follows each run's seed."""
    value = run.get(field, "unknown")
    if field != "data" or not isinstance(value, dict):
        return value
    return {name: _comparable_entry(info) for name, info in value.items()}


def _comparable_entry(info):
    if not isinstance(info, dict):
        return info
    if "sha256" in info:
        return info["sha256"]
    return {key: v for key, v in info.items() if key != "seed"}


def write_csv(
    rows: list[dict], path: pathlib.Path, reference: list[dict] = ()
) -> None:
    """Machine-readable table: fractions, not x100; `source` says whether
    a row was measured or published (n: runs averaged)."""
    keys = [key for key, _ in COLUMNS] + ["seconds"]
    fields = ["beam", "strategy", "n", "seeds"]
    for key in keys:
        fields += [f"{key}_mean", f"{key}_std"]
    fields.append("source")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in with_reference(rows, reference):
            record = {name: row[name] for name in ("beam", "strategy", "n")}
            record["source"] = (
                "published" if row.get("published") else "measured"
            )
            record["seeds"] = " ".join(map(str, row["seeds"]))
            for key in keys:
                stats = row.get(key, {})
                record[f"{key}_mean"] = stats.get("mean", "")
                record[f"{key}_std"] = _blank_none(stats.get("std"))
            writer.writerow(record)


def _blank_none(value):
    return "" if value is None else value


def plot(rows: list[dict], path: pathlib.Path) -> None:
    """One panel per metric; error bars are seed std where there are seeds;
    published rows dashed, with open markers.

    Uses the Agg canvas directly, so no global pyplot backend is touched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(COLUMNS), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(COLUMNS))
    beams = sorted({row["beam"] for row in rows})
    strategies = list(dict.fromkeys(row["strategy"] for row in rows))
    for axis, (key, title) in zip(axes, COLUMNS):
        for strategy in strategies:
            group = [r for r in rows if r["strategy"] == strategy]
            _plot_strategy(axis, group, key, strategy)
        axis.set(title=title, xlabel="beam size", xticks=beams)
        axis.set_ylabel("score x100")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.savefig(path, dpi=100)


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


def build_report(
    run_dirs: list[pathlib.Path],
    out_dir: pathlib.Path,
    allow_mixed=False,
    published: str | None = None,
) -> dict:
    """Load runs, aggregate, and write table.md/.csv, results.json, png;
    `published` ('csl', 'lcsts') adds the article's rows for that task."""
    runs = [load_run(run_dir) for run_dir in run_dirs]
    if not runs:
        raise ValueError("no runs to compare")
    problems = consistency_problems(runs)
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
    (out_dir / "table.md").write_text(markdown, encoding="utf-8")
    write_csv(rows, out_dir / "table.csv", reference)
    plot(with_reference(rows, reference), out_dir / "metrics.png")
    results = {
        "commit": commit,
        "problems": problems,
        "seeds": seeds_by_strategy(runs),
        "noise_rule": NOISE_RULE,
        "runs": runs,
        "aggregate": rows,
    }
    if published:
        results["published"] = {
            "task": published,
            "source": published_tables.SOURCE,
            "setting": {
                **published_tables.SETTING,
                "data": published_tables.DATA[published],
            },
            "rows": reference,
        }
    (out_dir / "results.json").write_text(
        json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return {**results, "markdown": markdown}


def run_strategies(
    task_script: pathlib.Path,
    strategies: list[str],
    seeds: list[int],
    workdir: pathlib.Path,
    extra: list[str],
) -> list[pathlib.Path]:
    """Run the task script per strategy x seed; skip finished runs.

    Every run gets the same extra arguments, so data and hyper-parameters
    agree; a run counts as finished once its results.json exists.
    """
    run_dirs = []
    for strategy in strategies:
        for seed in seeds:
            out = pathlib.Path(workdir) / run_name(strategy, seed)
            run_dirs.append(out)
            if (out / "results.json").exists():
                print(f"skip {out}: results.json exists", flush=True)
                _check_run_matches(out, strategy, seed)
                continue
            command = [
                sys.executable,
                str(task_script),
                "--strategy",
                strategy,
                "--seed",
                str(seed),
                "--out",
                str(out),
                *extra,
            ]
            print("run", " ".join(command), flush=True)
            if subprocess.run(command).returncode != 0:
                fail(
                    f"this run failed (its error is above): {' '.join(command)}"
                )
            _check_run_matches(out, strategy, seed)
    return run_dirs


def _check_run_matches(out: pathlib.Path, strategy: str, seed: int) -> None:
    """The script must have written the run it was asked for."""
    run = load_run(out)
    if (run["strategy"], run["seed"]) != (strategy, seed):
        raise ValueError(
            f"{out}/results.json holds {run['strategy']!r} seed {run['seed']}"
            f", expected {strategy!r} seed {seed}"
        )


def _resolve_script(path: str) -> pathlib.Path:
    """A relative script path is tried from here, then from the repo root."""
    script = pathlib.Path(path)
    if script.is_absolute() or script.exists():
        return script
    return REPO_ROOT / script


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep the usage examples' line breaks."""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Arguments, and those after `--` that go to the task script."""
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = ArgumentParser(description=__doc__, formatter_class=_Formatter)
    parser.add_argument(
        "runs", nargs="*", default=[], help="directories with results.json"
    )
    parser.add_argument("--out", default="comparison", help="report directory")
    parser.add_argument(
        "--run",
        action="store_true",
        help="run every strategy x seed before reporting",
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["baseline", "replace", "gp"],
        help="strategies to run (with --run)",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="seeds to run (with --run)",
    )
    parser.add_argument(
        "--workdir",
        default="runs",
        help="where --run puts STRATEGY-seedN directories",
    )
    parser.add_argument(
        "--task-script",
        default="tasks/csl_title.py",
        help="script --run calls (relative: cwd, then repo)",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="report runs that differ in data/model/scoring",
    )
    add_verbose(parser)
    parser.add_argument(
        "--published",
        choices=sorted(published_tables.TABLES),
        help="add the exposure-bias article's figures for this task as "
        "labelled reference rows",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="add exposure-bias diagnostics (tasks/diagnose.py: survival, "
        "recovery, length) to the report, in OUT/diagnostics",
    )
    args = parser.parse_args(argv)
    if extra and not args.run:
        parser.error("arguments after -- are passed on only with --run")
    if not args.run and not args.runs:
        parser.error("give run directories, or --run")
    if args.run:
        check_run_options(parser, args)
    return args, extra


def check_run_options(parser, args):
    """--run's strategies, seeds and script, before the first run starts."""
    script = _resolve_script(args.task_script)
    if not script.is_file():
        parser.error(f"--task-script {args.task_script}: no such file")
    for seed in args.seeds:
        if seed < 0:
            parser.error(f"--seeds {seed}: expected seeds of 0 or more")
    if script.resolve().parent != REPO_ROOT / "tasks":
        return  # another script: its strategies are its own
    from models.strategies import STRATEGIES

    for name in args.strategies:
        if name not in STRATEGIES:
            parser.error(
                f"--strategies {name}: unknown strategy; expected some of "
                f"{', '.join(sorted(STRATEGIES))}"
            )


def main(argv: list[str] | None = None) -> dict:
    """Run (with --run), then report; returns what results.json holds."""
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    run_dirs = [pathlib.Path(run) for run in args.runs]
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: not a directory")
    for run_dir in run_dirs:
        load_run(run_dir)  # a bad run directory named before any run starts
    if args.run:
        run_dirs += run_strategies(
            _resolve_script(args.task_script),
            args.strategies,
            args.seeds,
            pathlib.Path(args.workdir),
            extra,
        )
    report = build_report(run_dirs, out, args.allow_mixed, args.published)
    if args.diagnostics:
        from tasks.lib.diagnostics_report import add_to_comparison

        report["markdown"] += add_to_comparison(run_dirs, args.out)
    print(report["markdown"])
    print(f"wrote {args.out}/table.md, table.csv, results.json, metrics.png")
    return report


if __name__ == "__main__":
    run_main(main, prog="compare.py")
