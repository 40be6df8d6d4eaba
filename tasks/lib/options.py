"""Option groups several scripts share: the model's shape, the device and
precision, progress bars, and the training strategy's name.

A script's parser is built from these and its own options before Keras,
TensorFlow or JAX is imported, so that `--help` and a mistyped option
answer at once: nothing here imports a backend, and the values that
choices come from (`POLICIES`, the strategy names) are plain data.
"""

import argparse

from tasks.lib.cli import add_verbose
from tasks.lib.environment import POLICIES

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


def shape_bounds(args: argparse.Namespace) -> dict:
    """`{'--layers': (value, 1), ...}` for `cli.check_at_least`."""
    return {f"--{name}": (getattr(args, name), 1) for name in SHAPE_FLAGS}


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--precision, --allow-cpu, --verbose: shared by the training scripts."""
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


def add_progress_option(group, instead: str = "") -> None:
    """--no-progress (`args.progress` False); `instead` says what is shown
    then, e.g. 'one line per epoch'."""
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help=f"no progress bars ({instead})" if instead else "no progress bars",
    )


def strategy_names() -> list[str]:
    """The training strategies' names, without importing Keras."""
    try:
        from models.strategies.names import STRATEGY_NAMES
    except ImportError:
        # Until `models.strategies.names` exists: the registry (imports
        # Keras, so --help is slow).
        from models.strategies import STRATEGIES

        return sorted(STRATEGIES)
    return sorted(STRATEGY_NAMES)
