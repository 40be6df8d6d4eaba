"""Titles for new abstracts, from a finished run or a model directory.

Reads abstracts from a file or standard input: one abstract a line, or a
pairs file in the CLGE (title<TAB>content) or CSL
(prefix<TAB>abstract<TAB>title) format, detected per file. Writes TSV
(a header, then input number, rank, score and title per title) or JSON
lines (one object per abstract) to standard output or --output.

A run directory (--out of tasks/csl_title.py or tasks/lcsts_summary.py)
brings its best weights, vocabulary, lengths and the decoding settings it
was scored with: at --beams B its titles are those of its
predictions-beamB.tsv. A model directory (config.json or
bert_config.json, vocab.txt and a checkpoint) decodes with --maxlen and
--title-maxlen. A score is the title's summed log-probability; the n-best
list starts with the beam search's answer (bert4keras's rule), then the
other complete titles by score.

Usage:
    echo "摘要……" | python tasks/generate.py runs/csl_title-baseline-seed0
    python tasks/generate.py runs/csl-replace abstracts.txt --beams 3 \\
        --nbest 3 --format jsonl --output titles.jsonl
    python tasks/generate.py chinese_wwm_L-12_H-768_A-12 dev.tsv \\
        --sample -n 5 --topp 0.9 --seed 1
"""

import sys

from tasks.lib.abstracts import INPUT_FORMATS
from tasks.lib.abstracts import OUTPUT_FORMATS
from tasks.lib.abstracts import STDIN
from tasks.lib.abstracts import jsonl_lines
from tasks.lib.abstracts import read_abstracts
from tasks.lib.abstracts import tsv_lines
from tasks.lib.abstracts import write_lines
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_at_least
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.decoding_options import FLAGS
from tasks.lib.decoding_options import NO_LIMITS
from tasks.lib.decoding_options import DecodingOptions
from tasks.lib.decoding_options import OptionError
from tasks.lib.decoding_options import add_model_arguments
from tasks.lib.decoding_options import check_model_arguments
from tasks.lib.decoding_options import check_options
from tasks.lib.decoding_options import mode_conflicts

# More abstracts than this show a progress bar (unless --no-progress).
LONG_INPUT = 64


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add_model_arguments(parser)
    add(
        "input",
        nargs="?",
        default=STDIN,
        metavar="INPUT",
        help="abstracts file; '-' reads standard input",
    )
    add("--output", help="write here (atomically) instead of standard output")
    add("--format", default="tsv", choices=OUTPUT_FORMATS, help="output")
    add(
        "--input-format",
        default="auto",
        choices=INPUT_FORMATS,
        help="auto: a first line with tabs is CLGE (2 columns) or CSL (3), "
        "without: one abstract a line; lines: every line is an abstract",
    )
    group = parser.add_argument_group("decoding")
    group.add_argument("--beams", type=int, help="beam size (default 1)")
    group.add_argument(
        "--nbest",
        type=int,
        metavar="K",
        help="titles per abstract, with scores (at most --beams; default 1)",
    )
    group.add_argument(
        "--sample",
        action="store_true",
        help="draw titles at random (top-k / top-p) instead of beam search",
    )
    group.add_argument(
        "-n", type=int, help="--sample: titles per abstract (default 1)"
    )
    group.add_argument("--topk", type=int, help="--sample: top-k")
    group.add_argument("--topp", type=float, help="--sample: top-p (0, 1]")
    group.add_argument("--seed", type=int, help="--sample: random seed")
    group.add_argument(
        "--length-penalty",
        type=float,
        metavar="ALPHA",
        help="beam search: GNMT's length penalty (default: the run's "
        "setting; none for a model directory)",
    )
    group.add_argument(
        "--min-length",
        type=int,
        metavar="N",
        help="an end token counts from the N-th title token on (default: "
        "the run's setting; 1 for a model directory)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help="abstracts decoded together (default: sized by the device's "
        "free memory, 32 on a CPU)",
    )
    add(
        "--no-progress",
        dest="progress",
        action="store_false",
        help=f"no progress bar (shown for over {LONG_INPUT} abstracts)",
    )
    add_verbose(parser)
    return parser


def check_args(args):
    """What is wrong before anything is read or loaded, in one line."""
    check_at_least(
        {
            "--beams": (args.beams, 1),
            "--nbest": (args.nbest, 1),
            "-n": (args.n, 1),
            "--topk": (args.topk, 1),
            "--min-length": (args.min_length, 1),
            "--batch-size": (args.batch_size, 1),
        }
    )
    fields = ("beams", "nbest", "n", "topk", "topp", "seed", "length_penalty")
    given = {field: getattr(args, field) for field in fields}
    conflict = mode_conflicts(given, args.sample)
    if conflict:
        mode = "--sample" if args.sample else "beam search (no --sample)"
        fail(f"{FLAGS[conflict]}: does not apply to {mode}")
    beams, nbest = args.beams or 1, args.nbest or 1
    if nbest > beams:
        fail(f"--nbest {nbest}: expected at most --beams ({beams})")
    check_model_arguments(args)


def run(args):
    check_args(args)
    # Keras and the backend load here, not at the top: --help and argument
    # errors answer at once.
    from tasks.lib.generation import load_generator

    abstracts = read_abstracts(args.input, args.input_format)
    generator = load_generator(args.model, args.maxlen, args.title_maxlen)
    options = decoding_options(args, generator)
    results = generator.generate(
        [abstract.text for abstract in abstracts],
        options,
        batch_size=args.batch_size,
        progress=args.progress and len(abstracts) > LONG_INPUT,
    )
    if args.format == "jsonl":
        lines = jsonl_lines(abstracts, results)
    else:
        lines = tsv_lines(results)
    write_lines(lines, args.output)
    if args.output:
        print(
            f"wrote titles of {len(abstracts)} abstracts to {args.output}",
            file=sys.stderr,
        )


def decoding_options(args, generator):
    """The options of the command line, the run's where not given."""
    defaults = generator.defaults
    options = DecodingOptions(
        beams=args.beams or 1,
        nbest=args.nbest or 1,
        sample=args.sample,
        n=args.n or 1,
        topk=args.topk,
        topp=args.topp,
        seed=args.seed,
        length_penalty=(
            defaults.length_penalty
            if args.length_penalty is None
            else args.length_penalty
        ),
        min_length=args.min_length or defaults.min_length,
    )
    try:
        check_options(
            options, NO_LIMITS, generator.title_maxlen, generator.vocab_size
        )
    except OptionError as error:
        fail(f"{FLAGS[error.field]} {error.message}")
    return options


def main(argv=None):
    run_main(run, build_parser().parse_args(argv), prog="generate.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
