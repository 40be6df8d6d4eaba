"""What the benchmarks' command lines share: the real CSL data and
vocabulary read by default, the way a subcommand and the random model's
shape are declared and checked, and the command each table is printed
under (integer options: `tasks.lib.options.add_counts`)."""

import pathlib
import sys

from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import fail
from tasks.lib.options import SHAPE_FLAGS
from tasks.lib.options import add_shape_options

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
SHARED = REPO_ROOT.parent / "shared"
CSL_DEV = SHARED / "data" / "csl_ts" / "dev.tsv"
VOCAB = SHARED / "vocab" / "bert-base-chinese" / "vocab.txt"


def add_subcommand(subparsers, name: str, summary: str, run, check):
    """The parser of subcommand `name`: `main` calls `args.check(args)`,
    then `args.run(args)`."""
    parser = subparsers.add_parser(
        name, help=summary, formatter_class=HelpFormatter
    )
    parser.set_defaults(run=run, check=check)
    return parser


def add_shape(parser, defaults: dict) -> None:
    """--layers --hidden --heads --intermediate of the random model, each
    1 or more (`shape_bounds`)."""
    add_shape_options(
        parser, defaults, "always: speed does not depend on the weights"
    )


# The families a benchmark's random model can be, and the transformers
# class of each that the PyTorch peer builds (`peer.py`).
MODEL_TYPES = ("bert", "nezha", "roformer")
# Families transformers no longer has: no PyTorch peer to time them by.
NO_PEER = {"nezha": "NEZHA is not in transformers any more"}


def add_model_type(parser) -> None:
    """--model-type of the random model (BERT's learned positions,
    NEZHA's relative ones or RoFormer's rotary ones)."""
    parser.add_argument(
        "--model-type",
        choices=MODEL_TYPES,
        default="bert",
        help="the random model's family (nezha: no PyTorch peer)",
    )


def check_peer(args, peer_option: str | None) -> None:
    """Stop in one line when a peer is asked for (`peer_option`, the flag
    that asks) of a family transformers does not have."""
    if peer_option and args.model_type in NO_PEER:
        fail(
            f"--model-type {args.model_type} with {peer_option}: "
            f"{NO_PEER[args.model_type]}, so there is no PyTorch peer; "
            "compare with --model-type bert at the same shape instead"
        )


def shape_bounds(args) -> dict:
    """`{flag: (value, 1)}` of the options of `add_shape`, for
    `check_counts`."""
    return {f"--{name}": (getattr(args, name), 1) for name in SHAPE_FLAGS}


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
