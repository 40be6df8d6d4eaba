"""Option groups several scripts share: the model's shape, the device and
precision, progress bars; and the way every script declares its integer
options with the least value each takes, and checks them.

A script's parser is built from these and its own options before Keras,
TensorFlow or JAX is imported, so that `--help` and a mistyped option
answer at once: nothing here imports a backend, and the choices of
--precision (`environment.POLICIES`) are plain data.
"""

import argparse
from typing import NamedTuple

from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_at_least
from tasks.lib.environment import POLICIES
from tasks.lib.launch import add_launch_options

# The shape flags, and what each sets (`factory.shape_config` takes them).
SHAPE_FLAGS = {
    "layers": "Transformer layers",
    "hidden": "hidden width",
    "heads": "attention heads",
    "intermediate": "feed-forward width",
}


def add_shape_options(group, defaults: dict, used_when: str = "") -> None:
    """--layers, --hidden, --heads, --intermediate of a randomly initialised
    model, defaults from `defaults` (`intermediate` None: 4 x --hidden);
    `used_when` says when the flags apply, e.g. 'without --init'."""
    for name, meaning in SHAPE_FLAGS.items():
        text = f"{meaning} of a randomly initialised model"
        if name == "intermediate" and defaults[name] is None:
            text += " (default: 4 x --hidden)"
        group.add_argument(
            f"--{name}",
            type=int,
            default=defaults[name],
            help=f"{text} ({used_when})" if used_when else text,
        )


def add_device_options(
    parser: argparse.ArgumentParser, processes: bool = True
) -> None:
    """--precision, --allow-cpu, --verbose: shared by the training scripts;
    with `processes`, the launch of a run as several processes
    (`launch.add_launch_options`, checked by `launch.check_launch`)."""
    group = parser.add_argument_group("device")
    group.add_argument(
        "--precision",
        choices=sorted(POLICIES),
        help="compute precision; default bf16 on a GPU that supports it "
        "(compute capability 8.0+), else fp32",
    )
    group.add_argument(
        "--allow-cpu",
        action="store_true",
        help="train on the CPU even though nvidia-smi lists a GPU that the "
        "backend does not see (a CPU build; see README, On a GPU)",
    )
    add_verbose(group)
    if processes:
        add_launch_options(group)


def add_checkpointing_option(group) -> None:
    """--gradient-checkpointing (`args.gradient_checkpointing`): shared by
    the training scripts."""
    group.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each Transformer block's activations in the "
        "backward pass instead of keeping them: less memory (longer rows, "
        "bigger batches), about one more forward pass per step, the same "
        "gradients; a resumed run may turn it on or off",
    )


def add_progress_option(group, instead: str = "") -> None:
    """--no-progress (`args.progress` False); `instead` says what is shown
    then, e.g. 'one line per epoch'."""
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help=f"no progress bars ({instead})" if instead else "no progress bars",
    )


class Count(NamedTuple):
    """An integer option: its default (a list: one or more values), the
    least value it takes, its help and, where the help names it, its
    metavar."""

    default: int | list[int] | None
    least: int
    help: str
    metavar: str | None = None


def add_counts(group, counts: dict[str, tuple], *flags: str) -> None:
    """Declare the integer options `flags` of `counts` (`{flag: Count}`,
    or plain `(default, least, help)` tuples; no flag named: all of them)
    in `group`; `check_counts` checks them against their least values."""
    for flag in flags or counts:
        count = Count(*counts[flag])
        group.add_argument(
            flag,
            type=int,
            nargs="+" if isinstance(count.default, list) else None,
            default=count.default,
            metavar=count.metavar,
            help=count.help,
        )


def check_counts(args, counts: dict[str, tuple], bounds=None) -> None:
    """Stop in one line on the first option of `counts` below its least
    value (`check_at_least`); `bounds` (`{flag: (value, least)}`) are
    checked with them, in place of a declared one of the same flag."""
    declared = {
        flag: (getattr(args, flag[2:].replace("-", "_")), Count(*count).least)
        for flag, count in counts.items()
    }
    check_at_least({**declared, **(bounds or {})})
