"""Load test of tasks/serve.py: shared batches against one at a time.

Saves a small random model (the built-in default's shape by default) as a
model directory in a temporary folder and starts tasks/serve.py on it on a
free port of 127.0.0.1. Then, --rounds times in turn: decodes single
abstracts one at a time in this process, and lets --clients concurrent
clients send the same abstracts to the server, one per request, each
client waiting for its answer before it sends the next. Prints requests/s
and p50/p99 latency of both over all rounds, each round's speed-up, the
mean number of texts per decoder call, and whether the titles are the
same. Each phase stops after --requests requests or --seconds, whichever
comes first; nothing but 127.0.0.1 is contacted.

Usage:
    python tasks/serve_benchmark.py
    python tasks/serve_benchmark.py --clients 32 --requests 256 --beams 3
"""

import os
import sys
import tempfile

from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_at_least
from tasks.lib.cli import check_files
from tasks.lib.cli import run_main

# The built-in default's model (tasks/lib/experiment.py's TINY).
SHAPE = {"layers": 2, "hidden": 128, "heads": 4, "intermediate": 256}


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--clients", type=int, default=32, help="concurrent clients")
    add("--requests", type=int, default=512, help="requests in each phase")
    add(
        "--seconds",
        type=float,
        default=120.0,
        help="time limit of each phase",
    )
    add(
        "--rounds",
        type=int,
        default=3,
        help="rounds of both phases, alternating",
    )
    add("--beams", type=int, default=1, help="beam size of every request")
    add("--maxlen", type=int, default=128, help="max tokens of abstract+title")
    add("--title-maxlen", type=int, default=32, help="max title tokens")
    add(
        "--abstracts",
        help="abstracts to send (a file tasks/generate.py reads, used in "
        "turn; default: the synthetic data's)",
    )
    add(
        "--vocab",
        help="vocab.txt of the random model (default: the synthetic "
        "data's 60 characters)",
    )
    add("--wait-ms", type=float, default=10.0, help="the server's --wait-ms")
    add("--max-batch", type=int, default=32, help="the server's --max-batch")
    for name, value in SHAPE.items():
        add(f"--{name}", type=int, default=value, help=f"model {name}")
    add_verbose(parser)
    return parser


def run(args):
    check_at_least(
        {
            f"--{name.replace('_', '-')}": (getattr(args, name), 1)
            for name in ("clients", "requests", "rounds", "beams", "max_batch")
        }
    )
    check_files({"--abstracts": args.abstracts, "--vocab": args.vocab})
    # Keras and the backend load here, not at the top: --help and argument
    # errors answer at once.
    from tasks.lib.load_test import compare
    from tasks.lib.load_test import random_model_dir

    texts = abstracts(args.abstracts, args.requests)
    shape = {name: getattr(args, name) for name in SHAPE}
    serving = [
        "--wait-ms",
        str(args.wait_ms),
        "--max-batch",
        str(args.max_batch),
    ]
    with tempfile.TemporaryDirectory() as folder:
        model_dir = random_model_dir(
            folder, shape, max(512, args.maxlen), args.vocab
        )
        generator, rounds, status = compare(
            model_dir,
            texts,
            args.clients,
            args.beams,
            args.seconds,
            (args.maxlen, args.title_maxlen),
            serving,
            args.rounds,
        )
    report(args, generator, rounds, status)


def abstracts(path, count):
    """`count` abstracts: the file's, in turn, or synthetic ones."""
    from data import synthetic
    from tasks.lib.abstracts import read_abstracts

    if path is None:
        return [c for _, c in synthetic.make_pairs(count, seed=7)]
    texts = [abstract.text for abstract in read_abstracts(path)]
    return [texts[i % len(texts)] for i in range(count)]


def report(args, generator, rounds, status):
    from tasks.lib.load_test import pooled
    from tasks.lib.load_test import table

    model = generator.describe()
    print(
        f"Model: random, {model['layers']} layers, {model['hidden']} wide, "
        f"{model['parameters']:,} weights, vocab {model['vocab_size']}, "
        f"{model['backend']}; beam {args.beams}, titles up to "
        f"{args.title_maxlen} tokens; {len(rounds)} rounds"
    )
    print(table(pooled(rounds)))
    ratios = sorted(one.speed_up for one in rounds)
    same = [one.same_titles() for one in rounds]
    print(
        f"\nSpeed-up of shared batches (requests/s, served / one at a time):"
        f" median {ratios[len(ratios) // 2]:.1f}x, rounds "
        + ", ".join(f"{r:.1f}x" for r in ratios)
        + f"; titles identical for {sum(s for s, _ in same)} of "
        f"{sum(n for _, n in same)} requests decoded both ways; server exit "
        f"status after SIGTERM: {status}; load average (1 min) at the end: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


def main(argv=None):
    run_main(run, build_parser().parse_args(argv), prog="serve_benchmark.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
