"""What the tests share: paths to ../shared, tiny model shapes, batches.

Every tiny configuration lives here, each as small as the tests that use it
allow; tiny checkpoints in the real file formats are in `checkpoints.py`.
Test modules import from these two modules, never from one another.
"""

import contextlib
import os
import pathlib
import socket
import threading
import time

import keras
import numpy as np
import pytest
import uvicorn

from models import build_transformer_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
VOCAB_DIR = SHARED / "vocab" / "bert-base-chinese"
CSL_DEV = SHARED / "data" / "csl_ts" / "dev.tsv"
CLGE_DIR = SHARED / "data" / "clge_samples"
CSL_CORPUS = SHARED / "data" / "csl_corpus"


def require_shared(path):
    """Skip with a clear reason when a file of ../shared is absent."""
    if not pathlib.Path(path).exists():
        pytest.skip(f"{path} not found: ../shared is not beside the repo")
    return pathlib.Path(path)


# One backend ----------------------------------------------------------------

BACKENDS = ("tensorflow", "jax")


def one_backend_skip(marker, backend):
    """Why a test marked `@pytest.mark.one_backend(NAME, reason=WHY)`
    skips under `backend`; None where it runs (under NAME).

    For end-to-end runs whose backend-specific code in-process tests
    already check on every backend: they run once, not once a backend.
    """
    (runs_on,) = marker.args
    if runs_on not in BACKENDS:
        raise ValueError(
            f"one_backend({runs_on!r}): expected one of {BACKENDS}"
        )
    why = marker.kwargs.get("reason")
    if not why:
        raise ValueError(f"one_backend({runs_on!r}) needs a reason=")
    if backend == runs_on:
        return None
    return f"runs on KERAS_BACKEND={runs_on} only: {why}"


def backends_in_turn(values, reason):
    """`pytest.param`s of `values` (tuples for several arguments), each
    marked `one_backend`, the backends taken in turn: every value runs
    once a CI, and each backend runs some of them."""
    return [
        pytest.param(
            *(value if isinstance(value, tuple) else (value,)),
            marks=pytest.mark.one_backend(
                BACKENDS[index % len(BACKENDS)], reason=reason
            ),
        )
        for index, value in enumerate(values)
    ]


# Tiny model shapes ---------------------------------------------------------

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

# Parity with Hugging Face and the checkpoint formats: an odd feed-forward
# width (37) makes a transposed kernel a shape error, not a silent one.
TINY = {
    "vocab_size": 128,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "hidden_act": "gelu",
}
# Training steps: one layer, small enough to compile a fit in seconds.
TINY_TRAINER = dict(
    vocab_size=16,
    hidden_size=8,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=16,
    max_position_embeddings=16,
)
# Decoding: two layers and room for 40-token sources plus titles.
TINY_DECODER = dict(
    vocab_size=48,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
# Data parallelism: one layer, no dropout, so two devices = one device.
TINY_DISTRIBUTED = dict(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    **NO_DROPOUT,
)
# Pretraining batches of 16 tokens over a 40-token vocabulary.
TINY_PRETRAIN = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)
# The same kind of model through the task scripts' command lines.
TINY_TASK_ARGS = [
    "--layers",
    "1",
    "--hidden",
    "32",
    "--heads",
    "2",
    "--intermediate",
    "64",
    "--maxlen",
    "96",
    "--title-maxlen",
    "8",
    "--batch-size",
    "8",
    "--eval-batch-size",
    "16",
    "--lr",
    "1e-3",
    "--no-progress",
]
# pretrain.py on 200 CSL documents: seconds per run on a CPU.
TINY_PRETRAIN_ARGS = {
    "--limit": 200,
    "--layers": 2,
    "--hidden": 64,
    "--heads": 4,
    "--intermediate": 128,
    "--seq-len": 64,
    "--batch-size": 8,
    "--lr": 3e-3,
    "--warmup": 3,
    "--log-every": 8,
    "--objective": "mix",
}
# benchmark.py train: three strategies (one with options), two timed steps,
# two rounds.
TINY_BENCHMARK_ARGS = [
    "--layers",
    "1",
    "--hidden",
    "32",
    "--heads",
    "2",
    "--intermediate",
    "64",
    "--vocab",
    "100",
    "--maxlen",
    "32",
    "--batch-sizes",
    "4",
    "--strategies",
    "baseline",
    "gp",
    "professor:every=2",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--repeats",
    "2",
]


def tiny_unilm(config, seed=0, **overrides):
    """A UniLM model of a tiny `config`, initialised from `seed`."""
    keras.utils.set_random_seed(seed)
    return build_transformer_model(
        None, application="unilm", **{**config, **overrides}
    )


def trainer_model(seed=0, **overrides):
    """The `TINY_TRAINER` model of the trainer and strategy tests."""
    return tiny_unilm(TINY_TRAINER, seed, **overrides)


# Batches --------------------------------------------------------------------


def mixed_batch():
    """[CLS] source [SEP] target [SEP] rows of different lengths, padded."""
    rows = [([5, 6, 7], [8, 9]), ([4], [10, 11, 12, 13]), ([5, 6, 7, 9], [4])]
    length = max(len(s) + len(t) + 3 for s, t in rows)
    token_ids = np.zeros((len(rows), length), "int32")
    segment_ids = np.zeros((len(rows), length), "int32")
    for row, (source, target) in enumerate(rows):
        tokens = [2, *source, 3, *target, 3]
        token_ids[row, : len(tokens)] = tokens
        segment_ids[row, len(source) + 2 : len(tokens)] = 1
    return token_ids, segment_ids


def numpy_loss(probas, token_ids, segment_ids):
    """bert4keras's loss, one position at a time, in float64."""
    total, count = 0.0, 0
    for row in range(token_ids.shape[0]):
        for t in range(token_ids.shape[1] - 1):
            if segment_ids[row, t + 1] == 1:
                p = float(probas[row, t, token_ids[row, t + 1]])
                total -= np.log(p)
                count += 1
    return total / count


# Text ------------------------------------------------------------------------

# Enough to write Chinese test sentences and a few Latin words.
CHARACTERS = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸中文标题生成的，。"
WORDS = [
    "abc",
    "##de",
    "##f",
    "##a",
    "hello",
    "world",
    "bert",
    "##4",
    "##keras",
]

# A finished run of the built-in default (synthetic pairs, vocab.txt in the
# run directory), smaller and for one epoch: the tests that need a whole
# run add their --beams.
TINY_RUN_ARGS = [
    "--epochs",
    "1",
    "--layers",
    "1",
    "--hidden",
    "32",
    "--heads",
    "2",
    "--intermediate",
    "64",
    "--maxlen",
    "64",
    "--title-maxlen",
    "12",
    "--batch-size",
    "32",
    "--valid-limit",
    "16",
    "--no-progress",
]


@contextlib.contextmanager
def running(app):
    """`app` on a real uvicorn server, on a free port of 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
