"""What the benchmarks' command lines share: the real CSL data and
vocabulary read by default, the way a subcommand and its integer options
are declared and checked, and the command each table is printed under."""

import pathlib
import sys

from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import check_at_least
from tasks.lib.options import add_shape_options

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
SHARED = REPO_ROOT.parent / "shared"
CSL_DEV = SHARED / "data" / "csl_ts" / "dev.tsv"
VOCAB = SHARED / "vocab" / "bert-base-chinese" / "vocab.txt"
SHAPE_NAMES = ("layers", "hidden", "heads", "intermediate")


def add_subcommand(subparsers, name: str, summary: str, run, check):
    """The parser of subcommand `name`: `main` calls `args.check(args)`,
    then `args.run(args)`."""
    parser = subparsers.add_parser(
        name, help=summary, formatter_class=HelpFormatter
    )
    parser.set_defaults(run=run, check=check, least={})
    return parser


def add_counts(parser, counts: dict) -> None:
    """Integer options, `{flag: (default, least, help)}`, a list default
    for one or more values; `check_counts` stops on one below its least."""
    for flag, (default, least, text) in counts.items():
        action = parser.add_argument(
            flag,
            type=int,
            nargs="+" if isinstance(default, list) else None,
            default=default,
            help=text,
        )
        parser.get_default("least")[flag] = (action.dest, least)


def add_shape(parser, defaults: dict) -> None:
    """--layers --hidden --heads --intermediate of the random model, each
    1 or more."""
    add_shape_options(
        parser, defaults, "always: speed does not depend on the weights"
    )
    for name in SHAPE_NAMES:
        parser.get_default("least")[f"--{name}"] = (name, 1)


def check_counts(args, bounds=None) -> None:
    """`check_at_least` over the options of `add_counts` and `add_shape`,
    with `bounds` (`{flag: (value, least)}`) added or in their place."""
    declared = {
        flag: (getattr(args, dest), least)
        for flag, (dest, least) in args.least.items()
    }
    check_at_least({**declared, **(bounds or {})})


def add_input_options(parser, data_help: str, vocab_help: str) -> None:
    """--data (CSL pairs) and --vocab (its tokenizer's vocab.txt)."""
    parser.add_argument(
        "--data", type=pathlib.Path, default=CSL_DEV, help=data_help
    )
    parser.add_argument(
        "--vocab", type=pathlib.Path, default=VOCAB, help=vocab_help
    )


def print_command():
    """The command a table comes from, as its first line."""
    print("command: python tasks/benchmark.py " + " ".join(sys.argv[1:]))
