"""The speed benchmarks of `tasks/benchmark.py`: one module a subcommand
(`decode`, `padding`, `train`, `t5`), each with its `add_parser`,
`check_options` and `run`; `arguments` holds what their command lines
share, `flops` counts a training step's FLOPs and measures the device's
matmul peak, `peer` is the PyTorch step that `train` compares against.
"""

from tasks.lib.benchmarks import decode
from tasks.lib.benchmarks import padding
from tasks.lib.benchmarks import t5
from tasks.lib.benchmarks import train
from tasks.lib.cli import ArgumentParser

# Each subcommand imports Keras, torch and the models inside its `run`, so
# that --help and argument errors answer before any of them loads.


def build_parser(description: str = "") -> ArgumentParser:
    """The subcommands; a caller runs `args.check(args)`, then
    `args.run(args)`."""
    parser = ArgumentParser(description=description)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for subcommand in (decode, padding, train, t5):
        subcommand.add_parser(subparsers)
    return parser
