"""Model FLOPs utilisation (MFU): the FLOPs a step really computes
(`train_flops`, `decode_flops`) per second, over the matmul FLOP/s this
device reaches in this process on the model's own matmul shapes
(`peak_matmul_flops` of `train_shapes` / `decode_shapes`)."""

import time

import numpy as np
from keras import ops

COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# The least seconds one timing of a peak matmul runs (a shorter product is
# repeated), and the timings kept the best of. Short timings, many of
# them: on a CPU shared with other work a burst runs at the device's rate
# where a long loop runs at its share, and the peak must be the former.
PEAK_SECONDS = 0.002
PEAK_ROUNDS = 10


def layer_weights(layers: int, hidden: int, intermediate: int) -> int:
    """Matmul weights per token of the encoder layers (Q, K, V, output:
    4 h^2; feed-forward: 2 h i)."""
    return layers * (4 * hidden**2 + 2 * hidden * intermediate)


def head_weights(hidden: int, vocab: int) -> int:
    """Matmul weights per scored position of the MLM head (dense h^2, the
    output projection tied to the embeddings h V)."""
    return hidden**2 + hidden * vocab


def train_flops(
    layers: int,
    hidden: int,
    intermediate: int,
    vocab: int,
    maxlen: int,
    batch: int,
    head_positions: int | None = None,
) -> int:
    """Model FLOPs of one training step (forward + backward), no dropout.

        FLOPs = 6 * L * T + 6 * H * S + 12 * layers * hidden * maxlen**2
                * batch [+ gather]

    with T = batch * maxlen tokens, L the encoder layers' matmul weights
    per token (`layer_weights`), H the MLM head's (`head_weights`) and S
    the positions the head scores: every token (`head_positions` None, the
    full head) or batch * head_positions (the gathered head, the trainer's
    default, which scores `max_targets` slots a row). The gathered head's
    one-hot gather is a product too: (head_positions x maxlen) by
    (maxlen x hidden) a row, forward and its input gradient, 4 * batch *
    head_positions * maxlen * hidden. Embedding lookups do no
    multiplications and are left out.

    A matrix product with a (k, n) weight costs 2*k*n FLOPs per token
    forward and twice that backward (gradients of input and weight), hence
    6 per weight and token. The attention term is QK^T and A.V: 2 * 2 *
    maxlen * hidden FLOPs per token and layer forward, times 3 for
    training; the full maxlen x maxlen scores are counted (the UniLM mask
    saves nothing: every position is computed, then masked). Biases,
    LayerNorm, softmax, GELU and the loss are left out (a few percent at
    most). These are *model* FLOPs: strategies that do extra passes (`gp`
    differentiates twice, `fgm` runs two forward/backward passes) are
    credited with the same count, so their MFU shows what the extra work
    costs.
    """
    tokens = batch * maxlen
    scored = tokens if head_positions is None else batch * head_positions
    gather = 0
    if head_positions is not None:
        gather = 4 * batch * head_positions * maxlen * hidden
    attention = 12 * layers * hidden * maxlen**2 * batch
    return (
        6 * layer_weights(layers, hidden, intermediate) * tokens
        + 6 * head_weights(hidden, vocab) * scored
        + attention
        + gather
    )


def decode_flops(
    layers: int,
    hidden: int,
    intermediate: int,
    vocab: int,
    source_lengths: list[int],
    title_lengths: list[int],
    beam: int,
) -> int:
    """Useful forward FLOPs of decoding each source into its title with a
    key/value cache: the source once (its layers, its S x S attention,
    the head at its last position), then one step per title token for each
    of `beam` candidates (the layers, attention over the S + i cached
    positions, the head). Padding, finished candidates a batch still
    carries and beam bookkeeping are not counted, so an MFU from these
    FLOPs is a floor of the device's real use."""
    body = 2 * layer_weights(layers, hidden, intermediate)
    head = 2 * head_weights(hidden, vocab)
    total = 0
    for source, title in zip(source_lengths, title_lengths, strict=True):
        total += body * source + 4 * layers * hidden * source**2 + head
        for i in range(1, title + 1):
            context = source + i
            total += beam * (body + head + 4 * layers * hidden * context)
    return total


def train_shapes(
    hidden: int,
    intermediate: int,
    vocab: int,
    maxlen: int,
    batch: int,
    head_positions: int | None = None,
) -> list[tuple[int, int, int]]:
    """(m, k, n) of the training step's weight matmuls: the projections
    and feed-forward over every token, the head over the scored ones."""
    tokens = batch * maxlen
    scored = tokens if head_positions is None else batch * head_positions
    return [
        (tokens, hidden, hidden),
        (tokens, hidden, intermediate),
        (tokens, intermediate, hidden),
        (scored, hidden, vocab),
    ]


def decode_shapes(
    hidden: int, intermediate: int, vocab: int, rows: int, source: int
) -> list[tuple[int, int, int]]:
    """(m, k, n) of decoding's weight matmuls: the encoding of `rows`
    sources of `source` tokens, and the steps' `rows` candidates."""
    shapes = []
    for m in (rows * source, rows):
        shapes += [
            (m, hidden, hidden),
            (m, hidden, intermediate),
            (m, intermediate, hidden),
        ]
    return shapes + [(rows, hidden, vocab)]


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: `flops` done in `seconds` over `peak`
    FLOP/s."""
    return flops / seconds / peak


def time_matmul(shape, dtype: str) -> float:
    """Seconds of one (m, k) x (k, n) product via keras.ops, as the model
    runs it (same process, threads and dtype): the best of PEAK_ROUNDS
    timings, each of enough repeats to last PEAK_SECONDS."""
    m, k, n = shape
    rng = np.random.default_rng(0)
    a = ops.cast(rng.standard_normal((m, k), "float32"), dtype)
    b = ops.cast(rng.standard_normal((k, n), "float32"), dtype)

    def sync(x):
        return ops.convert_to_numpy(ops.cast(x[0, 0], "float32"))

    started = time.perf_counter()
    sync(ops.matmul(a, b))  # warm-up, and a first estimate
    repeats = max(1, int(PEAK_SECONDS / (time.perf_counter() - started)))
    best = float("inf")
    for _ in range(PEAK_ROUNDS):
        started = time.perf_counter()
        for _ in range(repeats):
            c = ops.matmul(a, b)
        sync(c)
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def peak_matmul_flops(precision: str, shapes, timer=time_matmul) -> float:
    """The highest matmul FLOP/s of `shapes` ((m, k, n) each, the model's
    own: `train_shapes`, `decode_shapes`) in `precision`, each timed by
    `timer(shape, dtype)` in seconds; the denominator of the MFU."""
    dtype = COMPUTE_DTYPES[precision]
    return max(2 * m * k * n / timer((m, k, n), dtype) for m, k, n in shapes)
