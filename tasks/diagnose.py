"""Exposure-bias diagnostics of finished runs: survival, recovery, length.

Rebuilds each run's test set, tokenizer and best model from the settings it
saved, then measures on the test set (strategies side by side, mean ± std
over seeds):

- survival: greedy titles still equal to the reference after t tokens,
  beside the product of teacher-forced accuracies (independent errors);
- recovery: cross-entropy and accuracy of the reference continuation after
  one wrong token (the model's own likeliest mistake, or a random token),
  against the clean prefix;
- length: ROUGE-L of greedy titles by reference length.

Usage:

    python tasks/diagnose.py runs/baseline-seed0 runs/replace-seed0 \\
        --out diagnostics
    python tasks/diagnose.py runs/*-seed* --limit 200 --span 8

Writes to --out: diagnostics.md (all tables and figures), and per
diagnostic NAME.md, NAME.csv, NAME.json, NAME.png. Each run's results are
cached in RUN_DIR/diagnostics.json and reused while its options and
best.weights.h5 are unchanged.
"""

import dataclasses
import sys

from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import UsageError
from tasks.lib.cli import add_verbose
from tasks.lib.diagnostics import DEFAULT_SPAN
from tasks.lib.options import add_counts
from tasks.lib.options import add_progress_option
from tasks.lib.options import check_counts

# The integer options, `{flag: (default, least, help)}`, checked by `main`
# before any run is read.
COUNTS = {
    "--limit": (None, 1, "use only the first N test pairs of each run"),
    "--span": (
        DEFAULT_SPAN,
        1,
        "recovery: reference tokens scored after the wrong one",
    ),
    "--positions": (
        None,
        1,
        "recovery: wrong-token positions per title, spread evenly "
        "(default: every position but the last)",
    ),
    "--batch-size": (
        64,
        1,
        "titles per teacher-forced pass and per decoding batch",
    ),
}


def build_parser():
    parser = ArgumentParser(description=__doc__)
    add = parser.add_argument
    add(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="finished run directories (results.json, config.json, "
        "best.weights.h5) of tasks/csl_title.py or tasks/lcsts_summary.py",
    )
    add("--out", default="diagnostics", help="report directory")
    add_counts(parser, COUNTS, "--limit", "--span", "--positions")
    add(
        "--length-edges",
        type=int,
        nargs="+",
        metavar="CHARS",
        help="length buckets' upper bounds in characters (default: the "
        "quartiles of all reference lengths)",
    )
    add("--seed", type=int, default=0, help="seed of the random wrong tokens")
    add_counts(parser, COUNTS, "--batch-size")
    add(
        "--recompute",
        action="store_true",
        help="ignore the cached RUN_DIR/diagnostics.json",
    )
    add(
        "--allow-mixed",
        action="store_true",
        help="report runs that differ in data/model/scoring",
    )
    add_progress_option(parser)
    add_verbose(parser)
    return parser


def run(args):
    """Diagnose every run, then write the report; returns its Markdown."""
    from tasks.lib.comparison.statistics import consistency_problems
    from tasks.lib.diagnostics import Options
    from tasks.lib.diagnostics_report import write_report
    from tasks.lib.run_diagnostics import check_run_dir
    from tasks.lib.run_diagnostics import diagnose_runs

    # Check every folder, and that the runs compare, before the slow work.
    runs = [check_run_dir(directory)[0].record() for directory in args.runs]
    problems = consistency_problems(runs)
    if problems and not args.allow_mixed:
        raise ValueError("; ".join(problems) + " (--allow-mixed to go on)")
    options = Options(args.span, args.positions, args.seed, args.limit)
    results = diagnose_runs(
        args.runs, options, args.batch_size, args.progress, args.recompute
    )
    return write_report(
        results, args.out, dataclasses.asdict(options), args.length_edges
    )


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_counts(args, COUNTS)
    except UsageError as error:
        print(f"diagnose.py: {error}", file=sys.stderr)
        return 2
    try:
        markdown = run(args)
    except (OSError, ValueError) as error:
        # A folder that is not a finished run, changed data, weights that
        # do not fit: one clear line, no traceback.
        print(f"diagnose.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted: finished runs are cached.", file=sys.stderr)
        return 130
    print(markdown)
    print(
        f"wrote {args.out}/diagnostics.md and survival/recovery/length "
        ".md, .csv, .json, .png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
