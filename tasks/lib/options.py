"""Option groups that several scripts share, defined once so that a flag
means and reads the same everywhere. Imports no Keras: `--help` and
argument errors answer at once."""

from tasks.lib.cli import add_verbose
from tasks.lib.environment import POLICIES

SHAPE_OPTIONS = {
    "layers": "Transformer layers",
    "hidden": "hidden width",
    "heads": "attention heads",
    "intermediate": "feed-forward width",
}


def add_shape_options(group, defaults: dict, used_when: str) -> None:
    """--layers --hidden --heads --intermediate of a randomly initialised
    model, with `defaults[name]` each; `used_when` says when they apply.
    An --intermediate default of None stands for 4 x --hidden."""
    for name, what in SHAPE_OPTIONS.items():
        note = used_when
        if name == "intermediate" and defaults[name] is None:
            note += "; default: 4 x --hidden"
        group.add_argument(
            f"--{name}",
            type=int,
            default=defaults[name],
            help=f"{what} of a randomly initialised model ({note})",
        )


def add_device_options(parser) -> None:
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
