"""The `train` subcommand: the training step of `Seq2SeqTrainer` timed per
strategy and batch size on a fixed random batch, with tokens/s, model
FLOPs utilisation and peak device memory, beside the PyTorch peer
(`peer.py`) on the same shapes (usage: `tasks/benchmark.py`).

Per batch size and round, the peer (baseline only: it implements teacher
forcing) runs first and frees its memory, then every strategy under each
`--target-heads` head: a fresh UniLM model and `Seq2SeqTrainer(model,
strategy, seed=0, max_targets=maxlen // 4)` compiled with Adam, one
untimed `fit()` of `--warmup` steps (compiling), then one `fit()` of
`--steps` steps on the same fixed random batch, timed from the end of its
first step to the end of its last (`step_timer`). With `--repeats R` the
peer and the strategies run R rounds in turn and each row is the median
round: on a machine shared with other jobs a slow spell then hits every
row alike. tokens/s = batch * maxlen / step; MFU = `train_flops` of the
row's head / step / the best matmul FLOP/s of the model's own shapes
(`train_shapes`), measured in this process before and after the rows
(`peak_matmul_flops`; the higher of the two, so that a slow moment at the
start does not lower the peak). With `--gradient-checkpointing` every
case is also timed with each block's activations recomputed in the
backward pass (timed first, so memory the allocator keeps from a plain run
cannot inflate its peak); on a CPU the peak memory is the process's peak
resident memory during the row.
"""

import os
import pathlib
import statistics
import sys
import time

from models.strategies.names import STRATEGY_NAMES
from tasks.lib.atomic import atomic_write_text
from tasks.lib.benchmarks.arguments import add_model_type
from tasks.lib.benchmarks.arguments import add_shape
from tasks.lib.benchmarks.arguments import add_subcommand
from tasks.lib.benchmarks.arguments import check_peer
from tasks.lib.benchmarks.arguments import print_command
from tasks.lib.benchmarks.arguments import shape_bounds
from tasks.lib.benchmarks.train_table import notes
from tasks.lib.benchmarks.train_table import train_table
from tasks.lib.cli import fail
from tasks.lib.environment import POLICIES
from tasks.lib.environment import check_gpu_build
from tasks.lib.environment import describe_environment
from tasks.lib.options import add_counts
from tasks.lib.options import add_device_options
from tasks.lib.options import check_counts

# Keras, NumPy, torch and what imports them (the models, the strategies,
# the config factory, `flops` and `peer`) are imported inside the
# functions that use them, so that `tasks/benchmark.py train --help`
# answers before any of them loads.

SHAPE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072}
# BertConfig's dropout: the step timed is the one fine-tuning BERT runs.
DROPOUT = 0.1
PEER = "peer"  # the peer's runs among the (strategy, head) cases' runs
PEER_CLASSES = {"bert": "BertForMaskedLM", "roformer": "RoFormerForMaskedLM"}
# The integer options, `{flag: (default, least, help)}`.
COUNTS = {
    "--vocab": (21128, 2, "vocabulary size"),
    "--maxlen": (256, 2, "tokens per training row"),
    "--batch-sizes": ([16, 64], 1, "batch sizes to time, one row each"),
    "--steps": (20, 2, "steps per row, all but the first timed (at least 2)"),
    "--warmup": (3, 0, "untimed steps first (compiling)"),
    "--repeats": (
        1,
        1,
        "rounds over all strategies; each row is the median round",
    ),
}


def add_parser(subparsers):
    parser = add_subcommand(
        subparsers,
        "train",
        "training-step speed, MFU and memory vs HF/PyTorch",
        run,
        check_options,
    )
    add_shape(parser, SHAPE)
    add_model_type(parser)
    add_counts(parser, COUNTS, "--vocab", "--maxlen", "--batch-sizes")
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        help="NAME or NAME:KEY=VALUE[:KEY=VALUE...] (options as "
        "--strategy-option takes them); default: every registered "
        "strategy with its defaults",
    )
    parser.add_argument(
        "--target-heads",
        nargs="+",
        choices=("gathered", "full"),
        default=["gathered"],
        help="MLM head of the loss: at the target positions only "
        "(gathered, the trainer's default) and/or at every position",
    )
    add_counts(parser, COUNTS, "--steps", "--warmup", "--repeats")
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="also time every case with gradient checkpointing (a row "
        "each): the step time and peak memory it trades",
    )
    add_device_options(parser, processes=False)
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the PyTorch/transformers peer",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="also write the table here",
    )


def check_options(args):
    """Impossible sizes and strategies, before anything is built (the
    model's shape is checked where its config is made, in `run`)."""
    # Allocate on demand, so JAX/TF and torch share one GPU in one process
    # and the peaks are what each side used (set before keras is imported,
    # which checking the strategies does).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    check_counts(args, COUNTS, shape_bounds(args))
    check_peer(args, not args.no_peer and "the peer (add --no-peer)")
    for spec in args.strategies or []:
        strategy_from_spec(spec)


def strategy_from_spec(spec):
    """`NAME` or `NAME:KEY=VALUE[:KEY=VALUE...]` -> a strategy object,
    e.g. `professor:every=4`; a clear error for a bad name or option."""
    from tasks.lib.strategy_options import make_strategy

    name, *options = spec.split(":")
    if name not in STRATEGY_NAMES:
        fail(
            f"--strategies {spec}: unknown strategy {name!r}; expected one "
            f"of {list(STRATEGY_NAMES)}"
        )
    return make_strategy(name, options, flag=f"--strategies {name}:")


def model_config(args):
    """The BertConfig of every model timed; a shape BertConfig refuses
    stops here, before anything is timed."""
    import dataclasses

    from tasks.lib.factory import shape_config

    config = shape_config(
        args.vocab,
        args.layers,
        args.hidden,
        args.heads,
        args.intermediate,
        max(512, args.maxlen),
        dropout=DROPOUT,
    )
    return dataclasses.replace(config, model_type=args.model_type)


def run(args):
    """`train` subcommand: see the module docstring."""
    from models import strategies as strategies_lib

    config = model_config(args)
    environment = describe_environment(args.precision)
    check_gpu_build(environment, args.allow_cpu)
    args.precision = environment["precision"]
    strategies = args.strategies or list(strategies_lib.STRATEGIES)
    modes = (True, False) if args.gradient_checkpointing else (False,)
    cases = [
        (s, h, c) for c in modes for h in args.target_heads for s in strategies
    ]
    token_ids, segment_ids = random_batch(
        max(args.batch_sizes), args.maxlen, args.vocab
    )
    peak = measure_peak(args)
    print_command()
    print_setting(args, environment, peak)
    timings = {}
    for batch_size in args.batch_sizes:
        batch = (token_ids[:batch_size], segment_ids[:batch_size])
        timings[batch_size] = time_rounds(args, config, cases, batch)
    peak = max(peak, measure_peak(args))
    rows = []
    for batch_size in args.batch_sizes:
        rows += batch_rows(args, batch_size, cases, timings[batch_size], peak)
    peer = (
        f"{PEER_CLASSES[args.model_type]} in PyTorch "
        f"(torch {peer_device(args) or 'not run'})"
    )
    table = train_table(rows) + notes(args, environment, rows, peer)
    text = "\n".join(table)
    print(text, flush=True)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return rows


def head_positions(args, head):
    """Positions a row the MLM head scores: None (every one) for the full
    head, the trainer's `max_targets` for the gathered one."""
    return target_count(args.maxlen) if head == "gathered" else None


def measure_peak(args):
    """The best matmul FLOP/s of the model's own matmul shapes, at every
    batch size and head timed, in the run's precision."""
    from tasks.lib.benchmarks.flops import peak_matmul_flops
    from tasks.lib.benchmarks.flops import train_shapes

    shapes = {
        shape
        for batch in args.batch_sizes
        for head in args.target_heads
        for shape in train_shapes(
            args.hidden,
            args.intermediate,
            args.vocab,
            args.maxlen,
            batch,
            head_positions(args, head),
        )
    }
    return peak_matmul_flops(args.precision, sorted(shapes))


def print_setting(args, environment, peak):
    """The line above the table: device, precision, model, steps."""
    print(
        f"backend {environment['backend']} "
        f"{environment['backend_version']} on "
        f"{', '.join(environment['devices'])}; precision "
        f"{args.precision}; {args.precision} matmul peak on the model's "
        f"shapes, before the rows {peak / 1e12:.3f} TFLOP/s; "
        f"{args.model_type} model {args.layers} layers x "
        f"{args.hidden} hidden, {args.heads} heads, intermediate "
        f"{args.intermediate}, vocab {args.vocab}; maxlen {args.maxlen} "
        f"(target = last {target_count(args.maxlen)} tokens); "
        f"{args.warmup} warm-up + {args.steps} steps (the last "
        f"{args.steps - 1} timed), median of "
        f"{args.repeats} round(s)",
        flush=True,
    )


def time_rounds(args, config, cases, batch):
    """`--repeats` rounds over the peer (unless `--no-peer`) and the
    (strategy, head) cases on `batch`: {case: [(seconds per step, peak
    bytes or None) per round]}, the peer's runs under PEER."""
    timings = {case: [] for case in cases}
    batch_size = len(batch[0])
    for round_ in range(1, args.repeats + 1):
        if not args.no_peer:
            from tasks.lib.benchmarks.peer import time_peer

            timings.setdefault(PEER, []).append(
                time_peer(
                    config, args.precision, args.warmup, args.steps, batch
                )
            )
            report(
                f"peer (torch {peer_device(args)}) batch {batch_size} round "
                f"{round_}",
                timings[PEER][-1],
            )
        for case in cases:
            timings[case].append(time_ours(args, config, *case, batch))
            strategy, head, checkpointing = case
            report(
                f"ours batch {batch_size} {strategy} {head}"
                f"{' checkpointed' if checkpointing else ''} round {round_}",
                timings[case][-1],
            )
    return timings


def peer_device(args):
    """Where the peer runs ('cuda' or 'cpu'); None with `--no-peer`."""
    if args.no_peer:
        return None
    from tasks.lib.benchmarks.peer import torch_device

    return torch_device()


def report(label, timing):
    """One round's time on stderr, as the rounds go."""
    step, _ = timing
    print(f"{label}: {step * 1e3:.1f} ms/step", file=sys.stderr, flush=True)


def batch_rows(args, batch_size, cases, timings, peak):
    """The table rows of one batch size from its rounds' timings: the
    median round's step, the highest peak memory; the peer on the first
    baseline row."""
    from tasks.lib.benchmarks.flops import mfu
    from tasks.lib.benchmarks.flops import train_flops

    tokens = batch_size * args.maxlen

    def flops(head):
        return train_flops(
            args.layers,
            args.hidden,
            args.intermediate,
            args.vocab,
            args.maxlen,
            batch_size,
            head_positions(args, head),
        )

    peer = None
    if PEER in timings:
        step, peer_peak = median_run(timings[PEER])
        peer = {
            "step": step,
            "tps": tokens / step,
            "peak": peer_peak,
            "device": peer_device(args),
        }
    rows = []
    for strategy, head, checkpointing in cases:
        step, ours_peak = median_run(timings[strategy, head, checkpointing])
        first = (strategy, head, checkpointing) == (
            "baseline",
            args.target_heads[0],
            False,
        )
        rows.append(
            {
                "batch": batch_size,
                "strategy": strategy,
                "head": head,
                "checkpointing": checkpointing,
                "step": step,
                "tps": tokens / step,
                "mfu": mfu(flops(head), step, peak),
                "peak": ours_peak,
                "flops": flops(head),
                "full_head_flops": flops("full"),
                "matmul_peak": peak,
                "peer": peer if first else None,
            }
        )
    return rows


def median_run(runs):
    """(median seconds per step, highest peak bytes or None) of rounds."""
    step = statistics.median(step for step, _ in runs)
    peaks = [peak for _, peak in runs if peak is not None]
    return step, max(peaks) if peaks else None


def target_count(maxlen):
    """Target tokens per row of `random_batch`: the last quarter."""
    return max(1, maxlen // 4)


def random_batch(batch, maxlen, vocab, seed=0):
    """Random token ids in [1, vocab) with a source/target split: the last
    quarter of each row (at least one token) is the target, segment 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, vocab, (batch, maxlen)).astype("int32")
    segment_ids = np.zeros((batch, maxlen), "int32")
    segment_ids[:, maxlen - target_count(maxlen) :] = 1
    return token_ids, segment_ids


def step_timer():
    """A callback timing the steps of one `fit()` from the end of its
    first step to the end of its last, so that neither compiling nor
    `fit`'s per-call set-up and tear-down count (on TensorFlow with a
    generator, over a second per call here). Each step's loss is read, so
    the device has finished that step when its clock is read.
    """
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])
            self.ends.append(time.perf_counter())

        def seconds_per_step(self):
            if len(self.ends) < 2:
                raise ValueError("timing needs at least 2 steps (--steps)")
            return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)

    return StepTimer()


def time_ours(args, config, strategy, head, checkpointing, batch):
    """(seconds per step, peak bytes or None) of `Seq2SeqTrainer` on
    `batch`: the steady steps of one `fit()` of `--steps` steps
    (`step_timer`); the peak of the accelerator, or on a CPU the
    process's peak resident memory during the row."""
    import keras

    from models import backend
    from models.bert import build_transformer_model
    from models.trainer import Seq2SeqTrainer
    from tasks.lib.factory import make_optimizer

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    backend.reset_peak_memory()
    backend.reset_peak_host_memory()
    model = build_transformer_model(
        config, application="unilm", dtype=POLICIES[args.precision]
    )
    trainer = Seq2SeqTrainer(
        model,
        strategy_from_spec(strategy),
        seed=0,
        max_targets=target_count(args.maxlen),
        target_head=head,
        gradient_checkpointing=checkpointing,
    )
    optimizer = keras.optimizers.Adam(1e-5)
    trainer.compile(optimizer=make_optimizer(optimizer, args.precision))

    def batches():
        while True:
            yield batch

    # fit() on one fixed batch: the trainer reads (token_ids, segment_ids)
    # batches, which train_on_batch(x) would wrap as (x, None, None).
    fit = dict(epochs=1, verbose=0, shuffle=False)
    if args.warmup:
        trainer.fit(batches(), steps_per_epoch=args.warmup, **fit)
    timer = step_timer()
    trainer.fit(batches(), steps_per_epoch=args.steps, callbacks=[timer], **fit)
    peak = backend.peak_memory_bytes()
    if peak is None:
        peak = backend.peak_host_memory_bytes()
    return timer.seconds_per_step(), peak
