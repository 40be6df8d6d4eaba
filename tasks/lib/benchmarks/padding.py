"""The `padding` subcommand: how much of real CSL training batches is
padding under each batch layout (`Seq2SeqBatches`' `bucket` and
`length_multiple`), how many compiled shapes each layout needs, and how
many positions per row the loss's MLM head scores, gathered against full
(usage: `tasks/benchmark.py`).
"""

import statistics

from data import Tokenizer
from data import read_pairs
from data.vocab import PAD_ID
from tasks.lib.benchmarks.arguments import add_input_options
from tasks.lib.benchmarks.arguments import add_subcommand
from tasks.lib.benchmarks.arguments import print_command
from tasks.lib.cli import check_files
from tasks.lib.options import add_counts
from tasks.lib.options import check_counts

# `data.batching` imports Keras: it is imported inside `run`, so that
# `tasks/benchmark.py --help` answers before Keras loads.

# (label, sorted within windows, lengths rounded up to a multiple of).
PADDING_LAYOUTS = (
    ("shuffled", False, None),
    ("shuffled, multiple of 32", False, 32),
    ("sorted in windows, multiple of 32", True, 32),
    ("sorted in windows, multiple of 16", True, 16),
    ("sorted in windows, multiple of 8", True, 8),
    ("sorted in windows, exact", True, None),
)

# The integer options, `{flag: (default, least, help)}`.
COUNTS = {
    "--maxlen": (256, 4, "tokens of source + title"),
    "--batch-size": (16, 1, "pairs per batch"),
    "--epochs": (3, 1, "epochs of shuffled batches counted per layout"),
}


def add_parser(subparsers):
    parser = add_subcommand(
        subparsers,
        "padding",
        "padding fraction of real CSL batches per batch layout",
        run,
        check_options,
    )
    data = "pairs to batch (CSL or CLGE format)"
    add_input_options(parser, data, "vocab.txt")
    add_counts(parser, COUNTS)


def check_options(args):
    """Impossible sizes and missing files, before any batch is built."""
    check_counts(args, COUNTS)
    check_files({"--data": args.data, "--vocab": args.vocab})


def padding_rows(batches, layouts, epochs):
    """Per layout: padding fraction, distinct lengths (compiled shapes) and
    mean padded length over `epochs` epochs of training batches."""
    rows = []
    for label, bucket, multiple in layouts:
        batches.bucket, batches.length_multiple = bucket, multiple
        real = padded = 0
        lengths = []
        for epoch in range(epochs):
            batches.set_epoch(epoch)
            for index in range(len(batches)):
                ((token_ids, _),) = batches[index]
                real += int((token_ids != PAD_ID).sum())
                padded += token_ids.size
                lengths.append(token_ids.shape[1])
        rows.append(
            {
                "layout": label,
                "padding": 1 - real / padded,
                "shapes": len(set(lengths)),
                "length": statistics.mean(lengths),
            }
        )
    return rows


def run(args):
    """`padding` subcommand: see the module docstring."""
    from data import batching

    tokenizer = Tokenizer(str(args.vocab), do_lower_case=True)
    pairs = read_pairs(str(args.data))
    batches = batching.Seq2SeqBatches(
        pairs, tokenizer, maxlen=args.maxlen, batch_size=args.batch_size
    )
    rows = padding_rows(batches, PADDING_LAYOUTS, args.epochs)
    targets = [int(sum(sample[1])) for sample in batches.samples]
    print_command()
    print(
        f"{len(pairs)} pairs of {args.data.name}, maxlen {args.maxlen}, "
        f"batch {args.batch_size}, {args.epochs} epochs of batches; sorting "
        f"windows of {batching.BUCKET_CHUNK_BATCHES} batches\n"
    )
    print("| batch layout | padding | shapes | mean length |")
    print("|:---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['layout']} | {100 * row['padding']:.1f}% "
            f"| {row['shapes']} | {row['length']:.0f} |"
        )
    full = rows[2]["length"] - 1
    print(
        f"\nMLM head positions per row: full {full:.0f} (mean, sorted in "
        f"windows, multiple of 32); gathered {batches.max_targets} (the "
        f"most target tokens of a pair; mean {statistics.mean(targets):.1f})"
    )
    return rows
