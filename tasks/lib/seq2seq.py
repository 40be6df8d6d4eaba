"""The command of the seq2seq tasks (`csl_title.py`, `lcsts_summary.py`):
read the command line, then run the experiment.

The experiment's modules import Keras, whose backend takes seconds to
start: importing them only once the command line has been read lets
`--help` and a mistyped option answer at once.
"""

from tasks.lib.cli import run_main
from tasks.lib.launch import check_launch
from tasks.lib.launch import stops_with_peers
from tasks.lib.seq2seq_options import build_parser


def main(argv, task: str, description: str, defaults: dict) -> int:
    """Parse, run; bad input ends in one line on stderr (exit status 2)
    before anything is trained or written."""
    args = build_parser(description, defaults).parse_args(argv)
    run_main(check_launch, args, args.batch_size, prog=f"{task}.py")
    from tasks.lib.experiment import run  # deferred: Keras starts here

    run_main(stops_with_peers(run), args, task, prog=f"{task}.py")
    return 0
