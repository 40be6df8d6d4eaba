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
import pathlib
import sys

from models.strategies.names import STRATEGY_NAMES
from tasks.lib import published as published_tables
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import run_main
from tasks.lib.cli import split_extra
from tasks.lib.runs import Run
from tasks.lib.runs import add_grid_options
from tasks.lib.runs import run_grid

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _resolve_script(path: str) -> pathlib.Path:
    """A relative script path is tried from here, then from the repo root."""
    script = pathlib.Path(path)
    if script.is_absolute() or script.exists():
        return script
    return REPO_ROOT / script


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("runs", nargs="*", default=[], help="directories with results.json")
    add(
        "--run",
        action="store_true",
        help="run every strategy x seed before reporting",
    )
    add_grid_options(
        parser,
        "strategies to run (with --run)",
        "seeds to run (with --run)",
        seeds=[0],
    )
    add(
        "--workdir",
        default="runs",
        help="where --run puts STRATEGY-seedN directories",
    )
    add(
        "--task-script",
        default="tasks/csl_title.py",
        help="script --run calls (relative: cwd, then repo)",
    )
    add(
        "--allow-mixed",
        action="store_true",
        help="report runs that differ in data/model/scoring",
    )
    add_verbose(parser)
    add(
        "--published",
        choices=sorted(published_tables.TABLES),
        help="add the exposure-bias article's figures for this task as "
        "labelled reference rows",
    )
    add(
        "--diagnostics",
        action="store_true",
        help="add exposure-bias diagnostics (tasks/diagnose.py: survival, "
        "recovery, length) to the report, in OUT/diagnostics",
    )
    add("--out", default="comparison", help="report directory")
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Arguments, and those after `--` that go to the task script."""
    argv, extra = split_extra(argv)
    parser = build_parser()
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
    for name in args.strategies:
        if name not in STRATEGY_NAMES:
            parser.error(
                f"--strategies {name}: unknown strategy; expected some of "
                f"{', '.join(STRATEGY_NAMES)}"
            )


def main(argv: list[str] | None = None) -> dict:
    """Run (with --run), then report; returns what results.json holds."""
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    run_dirs = [pathlib.Path(run) for run in args.runs]
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: not a directory")
    for run_dir in run_dirs:
        Run.load(run_dir)  # a bad run directory named before any run starts
    if args.run:
        script = _resolve_script(args.task_script)
        workdir = pathlib.Path(args.workdir)
        run_dirs += run_grid(
            script, args.strategies, args.seeds, workdir, extra
        )
    # Deferred: the report brings matplotlib and the scoring libraries, the
    # diagnostics Keras; --help and argument errors do without them.
    from tasks.lib.comparison.report import FILES
    from tasks.lib.comparison.report import build_report

    report = build_report(run_dirs, out, args.allow_mixed, args.published)
    if args.diagnostics:
        from tasks.lib.run_diagnostics import add_to_comparison

        report["markdown"] += add_to_comparison(run_dirs, args.out)
    print(report["markdown"])
    print(f"wrote {args.out}/{', '.join(FILES)}")
    return report


if __name__ == "__main__":
    run_main(main, prog="compare.py")
