"""The `decode` subcommand: the cached, batched `Seq2SeqDecoder` timed
against its full-recompute reference on the same random model and the
same CSL abstracts (usage: `tasks/benchmark.py`). Each beam size is one
row: the fast path's first run (compiling) and second run (the steady
state the speed-up uses), whether both paths give the same titles, and
the fast path's MFU: `decode_flops` of the titles it produced over its
warm time and the best matmul FLOP/s of decoding's own shapes
(`decode_shapes`), measured in this process before and after the rows.
With `--peer-n N` the first N abstracts are also titled greedily by the
same weights in transformers on PyTorch (`peer.py`), and its titles are
compared with the fast path's at beam 1.
"""

import statistics
import time

from data import Tokenizer
from tasks.lib.benchmarks.arguments import add_input_options
from tasks.lib.benchmarks.arguments import add_model_type
from tasks.lib.benchmarks.arguments import add_shape
from tasks.lib.benchmarks.arguments import add_subcommand
from tasks.lib.benchmarks.arguments import check_peer
from tasks.lib.benchmarks.arguments import print_command
from tasks.lib.benchmarks.arguments import shape_bounds
from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_files
from tasks.lib.cli import fail
from tasks.lib.environment import describe_environment
from tasks.lib.environment import summary_line
from tasks.lib.options import add_counts
from tasks.lib.options import check_counts

# Keras, NumPy and what imports them (the models, the config factory) are
# imported inside the functions that use them, so that
# `tasks/benchmark.py --help` answers before any of them loads.

SHAPE = {"layers": 4, "hidden": 256, "heads": 4, "intermediate": None}
# The integer options, `{flag: (default, least, help)}` (the least of
# --max-positions also grows with --maxlen: `check_options`).
COUNTS = {
    "--n": (200, 1, "CSL abstracts decoded by the fast path"),
    "--reference-n": (
        None,
        0,
        "decode only the first N with the reference (slow); identity is "
        "checked on those",
    ),
    "--beams": ([1, 2, 3], 1, "beam sizes to time"),
    "--maxlen": (32, 1, "title tokens at most"),
    "--source-maxlen": (
        None,
        3,
        "source tokens at most (default: max-positions - maxlen)",
    ),
    "--max-positions": (
        256,
        4,
        "max_position_embeddings; bert4keras's CSL script uses sources + "
        "titles of 256",
    ),
    "--batch-size": (
        None,
        1,
        "sources per fast batch (default: the decoder's 'auto', sized by "
        "the GPU's free memory, 32 on a CPU)",
    ),
    "--bucket": (32, 1, "source lengths padded to a multiple of this"),
    "--seed": (0, 0, "seed of the random weights"),
    "--peer-n": (
        0,
        0,
        "also title the first N greedily with transformers on PyTorch "
        "(full recompute, one source at a time)",
    ),
}
ROW_HEADER = (
    "| beam | ref n | ref titles/s | fast titles/s | speed-up "
    "| fast 1st run titles/s (with compile) | identical | fast MFU |\n"
    "|---:|---:|---:|---:|---:|---:|:---:|---:|"
)


def add_parser(subparsers):
    parser = add_subcommand(
        subparsers,
        "decode",
        "cached batched decoding vs full recompute",
        run,
        check_options,
    )
    first = ("--n", "--reference-n", "--beams", "--maxlen", "--source-maxlen")
    add_counts(parser, COUNTS, *first)
    add_shape(parser, SHAPE)
    add_model_type(parser)
    add_model_options(parser)
    data = "CSL pairs whose abstracts are decoded"
    add_input_options(parser, data, "vocab.txt of the tokenizer")
    parser.add_argument(
        "--progress",
        action="store_true",
        help="tqdm bars over batches / sources",
    )
    add_verbose(parser)


def add_model_options(parser):
    """The random model's positions, end bias and seed; the fast path's
    batches."""
    add_counts(parser, COUNTS, "--max-positions")
    parser.add_argument(
        "--end-bias",
        type=float,
        default=0.1,
        help="MLM bias of [SEP], so titles end at varied "
        "lengths (0: almost all run to maxlen)",
    )
    add_counts(parser, COUNTS, "--batch-size", "--bucket", "--seed", "--peer-n")


def check_options(args):
    """Impossible sizes and missing files, before any model is built (the
    model's shape is checked where its config is made, in `run`)."""
    positions = {"--max-positions": (args.max_positions, args.maxlen + 3)}
    check_counts(args, COUNTS, {**shape_bounds(args), **positions})
    if source_maxlen(args) + args.maxlen > args.max_positions:
        fail(
            f"--source-maxlen {source_maxlen(args)} + --maxlen "
            f"{args.maxlen}: expected at most --max-positions "
            f"{args.max_positions}"
        )
    check_peer(args, args.peer_n and "--peer-n")
    check_files({"--data": args.data, "--vocab": args.vocab})


def source_maxlen(args):
    return args.source_maxlen or args.max_positions - args.maxlen


def run(args):
    """`decode` subcommand: see the module docstring."""
    import dataclasses

    from tasks.lib.factory import shape_config

    tokenizer = Tokenizer(str(args.vocab), do_lower_case=True)
    config = shape_config(
        tokenizer.vocab_size,
        args.layers,
        args.hidden,
        args.heads,
        args.intermediate or 4 * args.hidden,
        args.max_positions,
    )
    config = dataclasses.replace(config, model_type=args.model_type)
    sources = [
        tokenizer.encode(text, maxlen=source_maxlen(args))[0]
        for text in read_abstracts(args.data, args.n)
    ]
    model = build_random_unilm(
        config, args.seed, tokenizer.end_id, args.end_bias
    )
    print_command()
    # The decode benchmark builds its model in float32.
    print(f"device: {summary_line(describe_environment('fp32'))}")
    print_setting(args, config, sources)
    peak = measure_peak(args, config, sources)
    rows = decode_rows(args, model, tokenizer.end_id, sources)
    add_mfu(
        rows, config, sources, max(peak, measure_peak(args, config, sources))
    )
    print(ROW_HEADER)
    for row in rows:
        print_row(row)
    print(
        f"fast MFU: decode_flops (useful forward FLOPs of the titles "
        f"produced) over the warm time and the best fp32 matmul FLOP/s of "
        f"decoding's shapes here, {rows[0]['matmul_peak'] / 1e12:.3f} "
        "TFLOP/s"
    )
    for row in rows:
        lengths = row["lengths"]
        print(
            f"beam {row['beam']}: title tokens mean "
            f"{statistics.mean(lengths):.1f}, min {min(lengths)}, "
            f"max {max(lengths)}"
        )
    if args.peer_n:
        rows.append(peer_row(args, model, tokenizer.end_id, sources, rows))
    return rows


def fast_batch(args):
    """Sources per fast batch: `--batch-size`, or the decoder's 'auto'
    on a CPU (32; a GPU's is larger, so its peak shapes are a floor)."""
    return args.batch_size or 32


def measure_peak(args, config, sources):
    """The best fp32 matmul FLOP/s of decoding's shapes at every beam."""
    from tasks.lib.benchmarks.flops import decode_shapes
    from tasks.lib.benchmarks.flops import peak_matmul_flops

    rows = min(fast_batch(args), len(sources))
    source = round(statistics.mean(len(ids) for ids in sources))
    shapes = {
        shape
        for beam in args.beams
        for shape in decode_shapes(
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
            rows * beam,
            source,
        )
    }
    return peak_matmul_flops("fp32", sorted(shapes))


def add_mfu(rows, config, sources, peak):
    """Each row's fast-path MFU (and its FLOPs) from the titles' lengths
    and the warm time (`len(sources) / row['fast']` seconds)."""
    from tasks.lib.benchmarks.flops import decode_flops
    from tasks.lib.benchmarks.flops import mfu

    for row in rows:
        row["flops"] = decode_flops(
            config.num_hidden_layers,
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
            [len(ids) for ids in sources],
            row["lengths"],
            row["beam"],
        )
        row["matmul_peak"] = peak
        row["mfu"] = mfu(row["flops"], len(sources) / row["fast"], peak)


def print_setting(args, config, sources):
    """The line under the device: the model, the sources, the batches."""
    import keras

    lengths = [len(ids) for ids in sources]
    print(
        f"backend {keras.backend.backend()}; {args.model_type} model "
        f"{args.layers} layers x "
        f"{args.hidden} hidden, {args.heads} heads, vocab "
        f"{config.vocab_size}; {len(sources)} CSL abstracts from "
        f"{args.data.name}, source tokens mean "
        f"{statistics.mean(lengths):.0f} (max {max(lengths)}, cut at "
        f"{source_maxlen(args)}); title maxlen {args.maxlen}; fast batch "
        f"{args.batch_size or 'auto'} sources, bucket {args.bucket}"
    )


def read_abstracts(path, n):
    """The first n abstracts of a `to title<TAB>abstract<TAB>title` file."""
    abstracts = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(
                    f"{path}:{number}: expected 3 tab-separated fields "
                    f"(prefix, abstract, title), got {len(fields)}"
                )
            abstracts.append(fields[1])
            if len(abstracts) == n:
                break
    if len(abstracts) < n:
        raise ValueError(f"{path}: only {len(abstracts)} lines, --n {n}")
    return abstracts


def build_random_unilm(config, seed, end_id, end_bias):
    """A random UniLM model; `end_bias` makes titles end at varied
    lengths, as a trained model's do (a random one almost never ends)."""
    import keras
    import numpy as np

    from models.bert import build_transformer_model

    keras.utils.set_random_seed(seed)
    model = build_transformer_model(config, application="unilm")
    bias = np.zeros(config.vocab_size, dtype="float32")
    bias[end_id] = end_bias
    model.bert_network["MLM-Bias"].bias.assign(bias)
    return model


def timed(decode, sources):
    started = time.perf_counter()
    titles = decode(sources)
    return titles, time.perf_counter() - started


def decode_rows(args, model, end_id, sources):
    """One table row per beam size: timings and identity."""
    from models.decoding import Seq2SeqDecoder

    common = dict(end_id=end_id, maxlen=args.maxlen)
    size = args.batch_size or "auto"
    fast = Seq2SeqDecoder(model, batch_size=size, bucket=args.bucket, **common)
    reference = Seq2SeqDecoder(model, reference=True, **common)
    subset = sources[: args.reference_n or len(sources)]
    reference.beam_search(subset[0], 1)  # one-off tracing, not timed
    rows = []
    for beam in args.beams:

        def fast_decode(batch):
            return fast.beam_search_batch(batch, beam, progress=args.progress)

        def reference_decode(batch):
            return reference.beam_search_batch(
                batch, beam, progress=args.progress
            )

        _, cold = timed(fast_decode, sources)
        titles, warm = timed(fast_decode, sources)
        expected, slow = timed(reference_decode, subset)
        rows.append(
            {
                "beam": beam,
                "ref_n": len(subset),
                "ref": len(subset) / slow,
                "fast": len(sources) / warm,
                "first": len(sources) / cold,
                "same": titles[: len(subset)] == expected,
                "lengths": [len(t) for t in titles],
                "titles": titles,
            }
        )
    return rows


def peer_row(args, model, end_id, sources, rows):
    """The peer's greedy titles/s on the first `--peer-n` sources, and
    whether they are the fast path's beam-1 titles."""
    from tasks.lib.benchmarks.peer import time_peer_decode
    from tasks.lib.benchmarks.peer import torch_device
    from weights.formats import model_arrays

    subset = sources[: args.peer_n]
    speed, titles = time_peer_decode(
        model.bert_config, model_arrays(model), subset, args.maxlen, end_id
    )
    greedy = [row for row in rows if row["beam"] == 1]
    same = greedy[0]["titles"][: len(subset)] == titles if greedy else None
    print(
        f"peer (transformers, torch {torch_device()}, greedy, full "
        f"recompute): {len(subset)} titles, {speed:.2f} titles/s; same "
        f"titles as fast beam 1: "
        f"{ {True: 'yes', False: 'NO', None: 'not compared'}[same] }",
        flush=True,
    )
    return {"beam": "peer", "peer_n": len(subset), "peer": speed, "same": same}


def print_row(row):
    print(
        f"| {row['beam']} | {row['ref_n']} | {row['ref']:.2f} "
        f"| {row['fast']:.1f} | {row['fast'] / row['ref']:.0f}x "
        f"| {row['first']:.1f} | {'yes' if row['same'] else 'NO'} "
        f"| {100 * row['mfu']:.1f}% |",
        flush=True,
    )
