"""tasks/reproduce.py's options, and its calls into the benchmark and
pretraining code in this process (`run_benchmark`, `run_pretrain`).

Imports nothing heavy at the top: `tasks/reproduce.py --help` answers
before Keras loads.
"""

import argparse
import pathlib
import sys

from tasks.lib.cli import ArgumentParser
from tasks.lib.runs import add_grid_options

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
CSL_DATA = SHARED / "data" / "csl_ts" / "dev.tsv"
CORPUS = [
    SHARED / "data" / "csl_corpus" / "abstracts.txt",
    SHARED / "data" / "csl_corpus" / "titles.txt",
]
VOCAB = SHARED / "vocab" / "bert-base-chinese" / "vocab.txt"
STAGE_NAMES = (
    "environment",
    "benchmark-train",
    "benchmark-decode",
    "model",
    "finetune",
    "compare",
)


def build_parser(description: str) -> ArgumentParser:
    """tasks/reproduce.py's parser; `description`: its docstring."""
    parser = ArgumentParser(
        description=description, formatter_class=HelpFormatter
    )
    add = parser.add_argument
    add("--out", default="runs/reproduce", help="output folder")
    add(
        "--smoke",
        action="store_true",
        help="the whole pipeline at toy size on a CPU, in minutes",
    )
    add(
        "--model-dir",
        help="a Chinese BERT checkpoint directory (Google or Hugging Face "
        "layout; Google's needs TensorFlow or `python -m weights.convert` "
        "first); none: pretrain one on the CSL corpus",
    )
    add(
        "--budget-minutes",
        type=float,
        default=60.0,
        help="wall time of the pretraining stage (without --model-dir); "
        "its steps are sized from a measured step time",
    )
    add(
        "--within",
        type=float,
        metavar="MINUTES",
        help="plan the whole pipeline to end within this wall time on "
        "this device (a calibration first; see above)",
    )
    add_grid_options(
        parser,
        "strategies to fine-tune (any registered one)",
        "fine-tuning seeds (default 0 1 2; with --smoke 0, unless --within)",
    )
    add(
        "--skip",
        nargs="+",
        default=[],
        choices=STAGE_NAMES,
        metavar="STAGE",
        help=f"stages not to run: {', '.join(STAGE_NAMES)}",
    )
    add(
        "--data",
        type=pathlib.Path,
        default=CSL_DATA,
        help="CSL pairs split 80/10/10 by seed for fine-tuning (give "
        "--train/--valid/--test after -- to use fixed splits instead)",
    )
    add(
        "--corpus",
        nargs="+",
        type=pathlib.Path,
        default=CORPUS,
        help="pretraining text, one document a line",
    )
    add(
        "--vocab",
        type=pathlib.Path,
        default=VOCAB,
        help="vocabulary of the model pretrained on --corpus",
    )
    add(
        "--allow-cpu",
        action="store_true",
        help="run the BERT-base stages without a GPU (slow: days for "
        "fine-tuning)",
    )
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the usage examples' line breaks; show each real default once
    (not None, a flag's False or an empty list, nor where the help text
    already says it)."""

    def _get_help_string(self, action):
        text = action.help
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        if isinstance(default, list):
            default = " ".join(map(str, default))
        return f"{text} (default: {default})".replace("%", "%%")


def run_benchmark(argv):
    """`tasks/benchmark.py`'s own functions, in this process; they print
    `sys.argv` as the command of their table, so it is set to the
    equivalent command for the call."""
    from tasks.lib.benchmarks import build_parser

    saved = sys.argv
    sys.argv = ["tasks/benchmark.py", *argv]
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    finally:
        sys.argv = saved


def run_pretrain(argv):
    """One `tasks/pretrain.py` run, in this process (a pretraining stage
    interrupted here leaves no process behind to write into its folder)."""
    import keras

    from tasks.lib.pretraining_options import build_parser
    from tasks.lib.pretraining_run import run

    keras.backend.clear_session()
    return run(build_parser("").parse_args(argv))
