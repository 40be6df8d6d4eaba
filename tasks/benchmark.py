"""Speed benchmarks.

`decode`: titles per second of the cached, batched decoder against
bert4keras-style full recompute, on real CSL abstracts, with a small random
UniLM model (speed does not depend on the weights). Both paths run in this
process on the same model and the same sources; the table says whether their
titles are identical.

Usage:

    python tasks/benchmark.py decode --n 200
    python tasks/benchmark.py decode --n 200 --reference-n 50 --beams 1 3

The fast path runs twice: the first run includes compiling (once per length
bucket and beam size), the second is the steady state the speed-up uses.

`padding`: the share of padding in real CSL training batches under each
batch layout (shuffled; sorted by length within windows; lengths rounded
to multiples of 32, 16, 8 or exact), the compiled shapes each needs, and
how many positions per row the loss's MLM head scores (gathered vs full):

    python tasks/benchmark.py padding

`train`: training-step speed of `Seq2SeqTrainer` (BERT-base UniLM by
default, maxlen 256, random tokens) for each strategy and batch size, with
tokens/s, model FLOPs utilisation (MFU) and peak device memory, against
the same step written with Hugging Face `BertForMaskedLM` in PyTorch (the
peer: UniLM mask as a 4-D additive attention mask, autocast, AdamW) in the
same run, on the same shapes:

    python tasks/benchmark.py train
    python tasks/benchmark.py train --batch-sizes 16 --strategies baseline gp
    python tasks/benchmark.py train --strategies baseline professor \
        professor:every=4

A strategy is named alone (its defaults) or with options, `NAME:KEY=VALUE`
(repeat `:KEY=VALUE` for more), as `--strategy-option` takes them.

See `run_train` for what is timed and `train_flops` for the FLOPs formula.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_at_least
from tasks.lib.cli import check_files
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.environment import POLICIES
from tasks.lib.environment import check_gpu_build
from tasks.lib.environment import describe_environment
from tasks.lib.environment import summary_line

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CSL_DEV = SHARED / "data" / "csl_ts" / "dev.tsv"
VOCAB = SHARED / "vocab" / "bert-base-chinese" / "vocab.txt"


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


def build_random_unilm(args, vocab_size, end_id):
    """A random UniLM model; `--end-bias` makes titles end at varied
    lengths, as a trained model's do (a random one almost never ends)."""
    import keras
    import numpy as np

    from models.bert import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    model = build_transformer_model(
        None,
        application="unilm",
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate or 4 * args.hidden,
        max_position_embeddings=args.max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    bias = np.zeros(vocab_size, dtype="float32")
    bias[end_id] = args.end_bias
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

        _, cold = timed(fast_decode, sources)
        titles, warm = timed(fast_decode, sources)
        expected, slow = timed(
            lambda batch: reference.beam_search_batch(
                batch, beam, progress=args.progress
            ),
            subset,
        )
        rows.append(
            {
                "beam": beam,
                "ref_n": len(subset),
                "ref": len(subset) / slow,
                "fast": len(sources) / warm,
                "first": len(sources) / cold,
                "same": titles[: len(subset)] == expected,
                "lengths": [len(t) for t in titles],
            }
        )
        print_row(rows[-1], header=len(rows) == 1)
    return rows


def print_row(row, header):
    if header:
        print(
            "| beam | ref n | ref titles/s | fast titles/s | speed-up "
            "| fast 1st run titles/s (with compile) | identical |"
        )
        print("|---:|---:|---:|---:|---:|---:|:---:|")
    print(
        f"| {row['beam']} | {row['ref_n']} | {row['ref']:.2f} "
        f"| {row['fast']:.1f} | {row['fast'] / row['ref']:.0f}x "
        f"| {row['first']:.1f} | {'yes' if row['same'] else 'NO'} |",
        flush=True,
    )


def run_decode(args):
    """`decode` subcommand: see the module docstring."""
    import keras

    from data import Tokenizer

    tokenizer = Tokenizer(str(args.vocab), do_lower_case=True)
    end_id = tokenizer._token_end_id
    source_maxlen = args.source_maxlen or args.max_positions - args.maxlen
    sources = [
        tokenizer.encode(text, maxlen=source_maxlen)[0]
        for text in read_abstracts(args.data, args.n)
    ]
    model = build_random_unilm(args, tokenizer.vocab_size, end_id)
    lengths = [len(ids) for ids in sources]
    print("command: python tasks/benchmark.py " + " ".join(sys.argv[1:]))
    # The decode benchmark builds its model in float32.
    print(f"device: {summary_line(describe_environment('fp32'))}")
    print(
        f"backend {keras.backend.backend()}; model {args.layers} layers x "
        f"{args.hidden} hidden, {args.heads} heads, vocab "
        f"{tokenizer.vocab_size}; {len(sources)} CSL abstracts from "
        f"{args.data.name}, source tokens mean "
        f"{statistics.mean(lengths):.0f} (max {max(lengths)}, cut at "
        f"{source_maxlen}); title maxlen {args.maxlen}; fast batch "
        f"{args.batch_size or 'auto'} sources, bucket {args.bucket}"
    )
    rows = decode_rows(args, model, end_id, sources)
    for row in rows:
        lengths = row["lengths"]
        print(
            f"beam {row['beam']}: title tokens mean "
            f"{statistics.mean(lengths):.1f}, min {min(lengths)}, "
            f"max {max(lengths)}"
        )
    return rows


def add_decode_parser(subparsers):
    parser = subparsers.add_parser(
        "decode",
        help="cached batched decoding vs full recompute",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--n",
        type=int,
        default=200,
        help="CSL abstracts decoded by the fast path",
    )
    parser.add_argument(
        "--reference-n",
        type=int,
        default=None,
        help="decode only the first N with the reference "
        "(slow); identity is checked on those",
    )
    parser.add_argument(
        "--beams",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="beam sizes to time",
    )
    parser.add_argument(
        "--maxlen", type=int, default=32, help="title tokens at most"
    )
    parser.add_argument(
        "--source-maxlen",
        type=int,
        default=None,
        help="source tokens at most (default: max-positions - maxlen)",
    )
    add_shape_options(parser, layers=4, hidden=256, heads=4, intermediate=None)
    parser.add_argument(
        "--max-positions",
        type=int,
        default=256,
        help="max_position_embeddings; bert4keras's CSL "
        "script uses sources + titles of 256",
    )
    parser.add_argument(
        "--end-bias",
        type=float,
        default=0.1,
        help="MLM bias of [SEP], so titles end at varied "
        "lengths (0: almost all run to maxlen)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sources per fast batch (default: the decoder's 'auto', sized "
        "by the GPU's free memory, 32 on a CPU)",
    )
    parser.add_argument(
        "--bucket",
        type=int,
        default=32,
        help="source lengths padded to a multiple of this",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights"
    )
    parser.add_argument(
        "--data",
        type=pathlib.Path,
        default=CSL_DEV,
        help="CSL pairs whose abstracts are decoded",
    )
    parser.add_argument(
        "--vocab",
        type=pathlib.Path,
        default=VOCAB,
        help="vocab.txt of the tokenizer",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="tqdm bars over batches / sources",
    )
    add_verbose(parser)
    parser.set_defaults(run=run_decode, check=check_decode_options)


def add_shape_options(parser, layers, hidden, heads, intermediate):
    """The random model's shape."""
    parser.add_argument(
        "--layers", type=int, default=layers, help="Transformer layers"
    )
    parser.add_argument(
        "--hidden", type=int, default=hidden, help="hidden width"
    )
    parser.add_argument(
        "--heads", type=int, default=heads, help="attention heads"
    )
    parser.add_argument(
        "--intermediate",
        type=int,
        default=intermediate,
        help="feed-forward width"
        + (" (default: 4 x --hidden)" if intermediate is None else ""),
    )


def check_shape(args):
    check_at_least(
        {
            "--layers": (args.layers, 1),
            "--hidden": (args.hidden, 1),
            "--heads": (args.heads, 1),
            "--intermediate": (args.intermediate, 1),
        }
    )
    if args.hidden % args.heads:
        fail(
            f"--hidden {args.hidden}: expected a multiple of --heads "
            f"{args.heads}"
        )


def check_decode_options(args):
    """Impossible sizes and missing files, before any model is built."""
    check_shape(args)
    check_at_least(
        {
            "--n": (args.n, 1),
            "--reference-n": (args.reference_n, 0),
            "--beams": (args.beams, 1),
            "--maxlen": (args.maxlen, 1),
            "--source-maxlen": (args.source_maxlen, 3),
            "--max-positions": (args.max_positions, args.maxlen + 3),
            "--batch-size": (args.batch_size, 1),
            "--bucket": (args.bucket, 1),
            "--seed": (args.seed, 0),
        }
    )
    source = args.source_maxlen or args.max_positions - args.maxlen
    if source + args.maxlen > args.max_positions:
        fail(
            f"--source-maxlen {source} + --maxlen {args.maxlen}: expected "
            f"at most --max-positions {args.max_positions}"
        )
    check_files({"--data": args.data, "--vocab": args.vocab})


# --- padding ----------------------------------------------------------------

PADDING_LAYOUTS = (
    ("shuffled", False, None),
    ("shuffled, multiple of 32", False, 32),
    ("sorted in windows, multiple of 32", True, 32),
    ("sorted in windows, multiple of 16", True, 16),
    ("sorted in windows, multiple of 8", True, 8),
    ("sorted in windows, exact", True, None),
)


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
                real += int((token_ids != 0).sum())
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


def run_padding(args):
    """`padding` subcommand: how much of real CSL training batches is
    padding under each batch layout (`Seq2SeqBatches`' `bucket` and
    `length_multiple`), and how many positions the loss's MLM head scores
    with the gathered head against the full one."""
    from data import Tokenizer
    from data import batching
    from data import read_pairs
    from data.batching import Seq2SeqBatches

    tokenizer = Tokenizer(str(args.vocab), do_lower_case=True)
    pairs = read_pairs(str(args.data))
    batches = Seq2SeqBatches(
        pairs, tokenizer, maxlen=args.maxlen, batch_size=args.batch_size
    )
    rows = padding_rows(batches, PADDING_LAYOUTS, args.epochs)
    targets = [int(sum(sample[1])) for sample in batches.samples]
    print("command: python tasks/benchmark.py " + " ".join(sys.argv[1:]))
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


def add_padding_parser(subparsers):
    parser = subparsers.add_parser(
        "padding",
        help="padding fraction of real CSL batches per batch layout",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=pathlib.Path,
        default=CSL_DEV,
        help="pairs to batch (CSL or CLGE format)",
    )
    parser.add_argument(
        "--vocab", type=pathlib.Path, default=VOCAB, help="vocab.txt"
    )
    parser.add_argument(
        "--maxlen", type=int, default=256, help="tokens of source + title"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="pairs per batch"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs of shuffled batches counted per layout",
    )
    parser.set_defaults(run=run_padding, check=check_padding_options)


def check_padding_options(args):
    """Impossible sizes and missing files, before any batch is built."""
    check_at_least(
        {
            "--maxlen": (args.maxlen, 4),
            "--batch-size": (args.batch_size, 1),
            "--epochs": (args.epochs, 1),
        }
    )
    check_files({"--data": args.data, "--vocab": args.vocab})


# --- train ------------------------------------------------------------------

COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def train_flops(layers, hidden, intermediate, vocab, maxlen, batch):
    """Model FLOPs of one training step (forward + backward), no dropout.

        FLOPs = 6 * N * T + 12 * layers * hidden * maxlen**2 * batch

    with T = batch * maxlen tokens and N the weights used in matrix
    products per token, the MLM head included and the embedding lookups
    (token, segment, position: no multiplications) excluded:

        N = layers * (4 * hidden**2 + 2 * hidden * intermediate)
            + hidden**2            (MLM dense)
            + hidden * vocab       (MLM output projection, tied to E)

    A matrix product with a (k, n) weight costs 2*k*n FLOPs per token
    forward and twice that backward (gradients of input and weight), hence
    6 * N per token. The attention term is QK^T and A.V: 2 * 2 * maxlen *
    hidden FLOPs per token and layer forward, times 3 for training. The
    full maxlen x maxlen scores are counted (the UniLM mask saves nothing:
    every position is computed, then masked). Biases, LayerNorm, softmax,
    GELU and the loss are left out (a few percent at most). These are
    *model* FLOPs: strategies that do extra passes (`gp` differentiates
    twice, `fgm` runs two forward/backward passes) are credited with the
    same count, so their MFU shows what the extra work costs.
    """
    tokens = batch * maxlen
    weights = (
        layers * (4 * hidden**2 + 2 * hidden * intermediate)
        + hidden**2
        + hidden * vocab
    )
    attention = 12 * layers * hidden * maxlen**2 * batch
    return 6 * weights * tokens + attention


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


def keras_reset_peak():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")


def keras_peak_bytes():
    """Peak device memory in bytes, or None where not measurable (CPU).

    TensorFlow's peak is reset before each row; JAX's cannot be reset, so
    on JAX it is the process peak up to that row."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        return (stats or {}).get("peak_bytes_in_use")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return None


def peak_matmul_flops(precision, gpu, size=None, repeats=None):
    """Measured matmul FLOP/s of the Keras device in `precision`.

    The best of `repeats` timings of a size x size product via keras.ops
    (8192 on GPU, 1024 on CPU); the denominator of the MFU."""
    import keras
    import numpy as np
    from keras import ops

    size = size or (8192 if gpu else 1024)
    repeats = repeats or (20 if gpu else 5)
    dtype = COMPUTE_DTYPES[precision]
    rng = np.random.default_rng(0)
    a = ops.cast(rng.standard_normal((size, size), "float32"), dtype)
    b = ops.cast(rng.standard_normal((size, size), "float32"), dtype)

    def sync(x):
        return keras.ops.convert_to_numpy(ops.cast(x[0, 0], "float32"))

    sync(ops.matmul(a, b))  # warm-up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            c = ops.matmul(a, b)
        sync(c)
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * size**3 / best


def strategy_from_spec(spec):
    """`NAME` or `NAME:KEY=VALUE[:KEY=VALUE...]` -> a strategy object,
    e.g. `professor:every=4`; a clear error for a bad name or option."""
    from models import strategies as strategies_lib
    from tasks.lib.experiment import make_strategy

    name, *options = spec.split(":")
    if name not in strategies_lib.STRATEGIES:
        fail(
            f"--strategies {spec}: unknown strategy {name!r}; expected one "
            f"of {sorted(strategies_lib.STRATEGIES)}"
        )
    return make_strategy(name, options, flag=f"--strategies {name}:")


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


def time_ours(args, batch_size, strategy, head, token_ids, segment_ids):
    """(seconds per step, peak bytes or None) of `Seq2SeqTrainer`: the
    steady steps of one `fit()` of `--steps` steps (`step_timer`)."""
    import keras

    from models.bert import build_transformer_model
    from models.trainer import Seq2SeqTrainer

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keras_reset_peak()
    model = build_transformer_model(
        None,
        application="unilm",
        dtype=POLICIES[args.precision],
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(512, args.maxlen),
    )
    trainer = Seq2SeqTrainer(
        model,
        strategy_from_spec(strategy),
        seed=0,
        max_targets=target_count(args.maxlen),
        target_head=head,
    )
    optimizer = keras.optimizers.Adam(1e-5)
    if args.precision == "fp16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer)
    batch = (token_ids[:batch_size], segment_ids[:batch_size])

    def batches():
        while True:
            yield batch

    # fit() on one fixed batch: the trainer reads (token_ids, segment_ids)
    # batches, which train_on_batch(x) would wrap as (x, None, None).
    if args.warmup:
        trainer.fit(
            batches(),
            steps_per_epoch=args.warmup,
            epochs=1,
            verbose=0,
            shuffle=False,
        )
    timer = step_timer()
    trainer.fit(
        batches(),
        steps_per_epoch=args.steps,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[timer],
    )
    return timer.seconds_per_step(), keras_peak_bytes()


def unilm_additive_mask(token_ids, segment_ids, dtype):
    """(batch, 1, L, L) additive mask: query i sees key j iff j is not
    padding and (j is source or j <= i); 0 where seen, dtype min where not.
    The same rule as tests/models/test_bert.py's loop, vectorised."""
    import torch

    length = token_ids.shape[1]
    positions = torch.arange(length, device=token_ids.device)
    causal = positions[None, :] <= positions[:, None]  # (L, L): j <= i
    source = (segment_ids == 0)[:, None, None, :]  # key j source
    seen = (source | causal[None, None]) & (token_ids != 0)[:, None, None, :]
    mask = torch.zeros(seen.shape, dtype=dtype, device=token_ids.device)
    return mask.masked_fill(~seen, torch.finfo(dtype).min)


def time_peer(args, batch_size, token_ids, segment_ids):
    """(seconds per step, peak bytes or None) of the PyTorch peer:
    HF BertForMaskedLM with the UniLM mask, autocast, AdamW, the same
    shifted target-only cross-entropy as `seq2seq_cross_entropy`."""
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(512, args.maxlen),
        type_vocab_size=2,
    )
    model = transformers.BertForMaskedLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        args.precision
    )
    scaler = torch.amp.GradScaler(
        device, enabled=args.precision == "fp16" and device == "cuda"
    )
    tokens = torch.tensor(
        token_ids[:batch_size], dtype=torch.long, device=device
    )
    segments = torch.tensor(
        segment_ids[:batch_size], dtype=torch.long, device=device
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            device, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            mask = unilm_additive_mask(tokens, segments, torch.float32)
            logits = model(
                input_ids=tokens, token_type_ids=segments, attention_mask=mask
            ).logits
        logits = logits[:, :-1].float()
        weight = segments[:, 1:].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            tokens[:, 1:].reshape(-1),
            reduction="none",
        ).view_as(weight)
        loss = (nll * weight).sum() / weight.sum().clamp(min=1.0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss.item()  # waits for the last step
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - started) / args.steps
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    model = optimizer = None  # frees GPU memory before empty_cache
    if device == "cuda":
        torch.cuda.empty_cache()
    return elapsed, peak, device


def gib(value):
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


TRAIN_HEADER = (
    "| batch | strategy | head | ours ms/step | × baseline | ours tokens/s "
    "| MFU | ours peak mem | peer ms/step | peer tokens/s | peer peak mem "
    "| ours/peer (tokens/s) |",
    "|---:|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
)


def train_table(rows):
    """Markdown table lines; peer columns only on rows that have a peer;
    × baseline: the step against the `baseline` row of the same batch size
    and head."""
    lines = list(TRAIN_HEADER)
    baselines = {
        (row["batch"], row["head"]): row["step"]
        for row in rows
        if row["strategy"] == "baseline"
    }
    for row in rows:
        relative = "—"
        key = (row["batch"], row["head"])
        if key in baselines:
            relative = f"{row['step'] / baselines[key]:.2f}"
        peer = row.get("peer")
        if peer:
            peer_cells = (
                f"{peer['step'] * 1e3:.1f} | {peer['tps']:.0f} "
                f"| {gib(peer['peak'])} "
                f"| {row['tps'] / peer['tps']:.3g}"
            )
        else:
            peer_cells = "— | — | — | —"
        lines.append(
            f"| {row['batch']} | {row['strategy']} | {row['head']} "
            f"| {row['step'] * 1e3:.1f} "
            f"| {relative} | {row['tps']:.0f} | {100 * row['mfu']:.1f}% "
            f"| {gib(row['peak'])} | {peer_cells} |"
        )
    return lines


def run_train(args):
    """`train` subcommand.

    Per batch size and round, the peer (baseline only: it implements
    teacher forcing) runs first and frees its memory, then every strategy
    under each `--target-heads` head: a fresh UniLM model and
    `Seq2SeqTrainer(model, strategy, seed=0, max_targets=maxlen // 4)`
    compiled with
    Adam, one untimed `fit()` of `--warmup` steps (compiling), then one
    `fit()` of `--steps` steps on the same fixed random batch, timed from
    the end of its first step to the end of its last (`step_timer`).
    With `--repeats R` the peer and the strategies run R rounds in turn
    and each row is the median round: on a machine shared with other jobs
    a slow spell then hits every row alike. tokens/s = batch * maxlen / step;
    MFU = train_flops / step / the matmul FLOP/s measured in this process
    (`peak_matmul_flops`).
    """
    import keras

    from models import strategies as strategies_lib

    environment = describe_environment(args.precision)
    check_gpu_build(environment, args.allow_cpu)
    device = ", ".join(environment["devices"])
    gpu = environment["accelerator"] == "gpu"
    args.precision = environment["precision"]
    strategies = args.strategies or list(strategies_lib.STRATEGIES)
    token_ids, segment_ids = random_batch(
        max(args.batch_sizes), args.maxlen, args.vocab
    )
    peak = peak_matmul_flops(args.precision, gpu)
    print("command: python tasks/benchmark.py " + " ".join(sys.argv[1:]))
    print(
        f"backend {keras.backend.backend()} "
        f"{environment['backend_version']} on {device}; precision "
        f"{args.precision}; measured {args.precision} matmul peak "
        f"{peak / 1e12:.2f} TFLOP/s; model {args.layers} layers x "
        f"{args.hidden} hidden, {args.heads} heads, intermediate "
        f"{args.intermediate}, vocab {args.vocab}; maxlen {args.maxlen} "
        f"(target = last {max(1, args.maxlen // 4)} tokens); "
        f"{args.warmup} warm-up + {args.steps} steps (the last "
        f"{args.steps - 1} timed), median of "
        f"{args.repeats} round(s)",
        flush=True,
    )
    rows = []
    peer_device = None
    for batch_size in args.batch_sizes:
        tokens = batch_size * args.maxlen
        flops = train_flops(
            args.layers,
            args.hidden,
            args.intermediate,
            args.vocab,
            args.maxlen,
            batch_size,
        )
        cases = [(s, h) for h in args.target_heads for s in strategies]
        timings = {case: [] for case in cases}
        peer_runs = []
        for round_ in range(args.repeats):
            if not args.no_peer:
                step, peer_peak, peer_device = time_peer(
                    args, batch_size, token_ids, segment_ids
                )
                peer_runs.append((step, peer_peak))
                print(
                    f"peer (torch {peer_device}) batch {batch_size} round "
                    f"{round_ + 1}: {step * 1e3:.1f} ms/step",
                    file=sys.stderr,
                    flush=True,
                )
            for strategy, head in cases:
                step, ours_peak = time_ours(
                    args, batch_size, strategy, head, token_ids, segment_ids
                )
                timings[strategy, head].append((step, ours_peak))
                print(
                    f"ours batch {batch_size} {strategy} {head} round "
                    f"{round_ + 1}: {step * 1e3:.1f} ms/step",
                    file=sys.stderr,
                    flush=True,
                )
        peer = None
        if peer_runs:
            step = statistics.median(step for step, _ in peer_runs)
            peaks = [peak for _, peak in peer_runs if peak is not None]
            peer = {
                "step": step,
                "tps": tokens / step,
                "peak": max(peaks) if peaks else None,
                "device": peer_device,
            }
        for strategy, head in cases:
            runs = timings[strategy, head]
            step = statistics.median(step for step, _ in runs)
            peaks = [peak for _, peak in runs if peak is not None]
            ours_peak = max(peaks) if peaks else None
            first = strategy == "baseline" and head == args.target_heads[0]
            rows.append(
                {
                    "batch": batch_size,
                    "strategy": strategy,
                    "head": head,
                    "step": step,
                    "tps": tokens / step,
                    "mfu": flops / step / peak,
                    "peak": ours_peak,
                    "flops": flops,
                    "peer": peer if first else None,
                }
            )
    lines = train_table(rows)
    notes = [
        "",
        "MFU: model FLOPs (6 x matmul weights x tokens + 12 x layers x "
        "hidden x maxlen^2 x batch, MLM projection included; see "
        "train_flops) per second over the measured matmul peak; the "
        "gathered head is credited with the full head's FLOPs.",
        "Peer: Hugging Face BertForMaskedLM in PyTorch "
        f"(torch {peer_device or 'not run'}), "
        f"UniLM 4-D additive mask, {args.precision} (autocast unless fp32), "
        "AdamW; teacher forcing, so "
        "baseline rows only.",
    ]
    if keras.backend.backend() == "jax":
        notes.append(
            "JAX peak memory is the process peak up to that row "
            "(it cannot be reset)."
        )
    print("\n".join(lines + notes), flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(
            "\n".join(lines + notes) + "\n", encoding="utf-8"
        )
    return rows


def add_train_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="training-step speed, MFU and memory vs HF/PyTorch",
        formatter_class=HelpFormatter,
    )
    add_shape_options(
        parser, layers=12, hidden=768, heads=12, intermediate=3072
    )
    parser.add_argument(
        "--vocab", type=int, default=21128, help="vocabulary size"
    )
    parser.add_argument(
        "--maxlen", type=int, default=256, help="tokens per training row"
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[16, 64],
        help="batch sizes to time, one row each",
    )
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
    parser.add_argument(
        "--steps",
        type=int,
        default=20,
        help="steps per row, all but the first timed (at least 2)",
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (compiling)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds over all strategies; each row is the median round",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(POLICIES),
        default=None,
        help="default: bf16 on a GPU that supports it, else fp32",
    )
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="time the CPU even though nvidia-smi lists a GPU that the "
        "backend does not see",
    )
    add_verbose(parser)
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
    parser.set_defaults(run=run_train, check=check_train_options)


def check_train_options(args):
    """Impossible sizes and strategies, before anything is built."""
    # Allocate on demand, so JAX/TF and torch share one GPU in one process
    # and the peaks are what each side used (set before keras is imported,
    # which checking the strategies does).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    check_shape(args)
    check_at_least(
        {
            "--vocab": (args.vocab, 2),
            "--maxlen": (args.maxlen, 2),
            "--batch-sizes": (args.batch_sizes, 1),
            "--steps": (args.steps, 2),
            "--warmup": (args.warmup, 0),
            "--repeats": (args.repeats, 1),
        }
    )
    for spec in args.strategies or []:
        strategy_from_spec(spec)


def build_parser():
    parser = ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_decode_parser(subparsers)
    add_padding_parser(subparsers)
    add_train_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.check(args)
    return args.run(args)


if __name__ == "__main__":
    run_main(main, prog="benchmark.py")
