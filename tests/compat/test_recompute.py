"""compat.backend.recompute_grad and RECOMPUTE, as in bert4keras: off
unless asked, and when on, the same gradients with the layer (or every
Transformer block of a built model) recomputed in the backward pass."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from compat import backend as compat_backend
from compat import models as compat_models
from models import backend
from tests.common import ROOT
from tests.common import TINY_TRAINER


class Block(keras.layers.Layer):
    """A layer with dropout inside, as bert4keras decorates them."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(8, activation="gelu")
        self.dropout = keras.layers.Dropout(0.3, seed=1)

    def call(self, inputs, training=None):
        return self.dropout(self.dense(inputs), training=training) * 2


def gradient(layer_class, x):
    keras.utils.set_random_seed(0)
    layer = layer_class()
    layer(x)  # built

    def loss():
        return keras.ops.sum(layer(x, training=True) * x), None

    _, _, grads = backend.gradients(loss, layer.trainable_variables, [])
    return [np.asarray(g) for g in grads]


def test_recompute_grad_leaves_call_alone_without_recompute(monkeypatch):
    monkeypatch.setattr(compat_backend, "do_recompute", False)
    call = Block.call
    assert compat_backend.recompute_grad(call) is call


def test_recompute_grad_gives_the_same_gradients(monkeypatch):
    monkeypatch.setattr(compat_backend, "do_recompute", True)

    class Recomputed(Block):
        call = compat_backend.recompute_grad(Block.call)

    assert Recomputed.call is not Block.call
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    for expected, got in zip(gradient(Block, x), gradient(Recomputed, x)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("on", [False, True])
def test_built_models_checkpoint_their_blocks_under_recompute(monkeypatch, on):
    monkeypatch.setattr(compat_backend, "do_recompute", on)
    model = compat_models.build_transformer_model(
        None, application="unilm", **TINY_TRAINER
    )
    assert model.bert_network.gradient_checkpointing is on


@pytest.mark.parametrize(
    "value, expected",
    [("1", True), ("true", True), ("on", True), ("0", False), ("", False)],
)
def test_recompute_values_read_as_bert4keras_reads_them(value, expected):
    assert compat_backend.recompute_from(value) is expected


@pytest.mark.slow
def test_the_environment_variable_is_read_at_import():
    """bert4keras reads RECOMPUTE when its backend is imported."""
    code = "import compat.backend as b; print(b.do_recompute)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT), "RECOMPUTE": "1"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert done.stdout.split()[-1] == "True"
