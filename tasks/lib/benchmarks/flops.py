"""Model FLOPs utilisation (MFU) of a training step: the FLOPs the step's
model does (`train_flops`) over the matmul FLOP/s this device reaches in
this process (`peak_matmul_flops`)."""

import time

import numpy as np
from keras import ops

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


def peak_matmul_flops(precision, gpu, size=None, repeats=None):
    """Measured matmul FLOP/s of the Keras device in `precision`.

    The best of `repeats` timings of a size x size product via keras.ops
    (8192 on GPU, 1024 on CPU); the denominator of the MFU."""
    size = size or (8192 if gpu else 1024)
    repeats = repeats or (20 if gpu else 5)
    dtype = COMPUTE_DTYPES[precision]
    rng = np.random.default_rng(0)
    a = ops.cast(rng.standard_normal((size, size), "float32"), dtype)
    b = ops.cast(rng.standard_normal((size, size), "float32"), dtype)

    def sync(x):
        return ops.convert_to_numpy(ops.cast(x[0, 0], "float32"))

    sync(ops.matmul(a, b))  # warm-up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            c = ops.matmul(a, b)
        sync(c)
        best = min(best, (time.perf_counter() - started) / repeats)
    return 2 * size**3 / best
