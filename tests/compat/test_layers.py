"""compat.layers.Loss: bert4keras's loss layer trains as Seq2SeqTrainer does."""

import keras
import numpy as np
import pytest

from compat.backend import K
from compat.layers import Loss
from compat.models import build_transformer_model
from compat.optimizers import Adam
from compat.snippets import DataGenerator
from models import build_transformer_model as build_ours
from models.trainer import Seq2SeqTrainer
from tests.checkpoints import randomize

CONFIG = dict(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


class CrossEntropy(Loss):
    """As written in bert4keras's seq2seq examples (int segment ids)."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = y_mask[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


class Recorded(CrossEntropy):
    """Records the dtypes `compute_loss` was given."""

    dtypes = []

    def compute_loss(self, inputs, mask=None):
        Recorded.dtypes = [K.dtype(x) for x in inputs]
        return super().compute_loss(inputs, mask)


class Batches(DataGenerator):
    """Yields the given batches in order, as the examples' generators do."""

    def __iter__(self, random=False):
        for token_ids, segment_ids in self.data:
            yield [token_ids, segment_ids], None


def unilm_batch(rows, length=None):
    """[CLS] source [SEP] target [SEP] rows, padded (ids < 40)."""
    length = length or max(len(s) + len(t) + 3 for s, t in rows)
    token_ids = np.zeros((len(rows), length), "int64")
    segment_ids = np.zeros((len(rows), length), "int64")
    for row, (source, target) in enumerate(rows):
        tokens = [2, *source, 3, *target, 3]
        token_ids[row, : len(tokens)] = tokens
        segment_ids[row, len(source) + 2 : len(tokens)] = 1
    return token_ids, segment_ids


BATCH = unilm_batch(
    [([5, 6, 7, 30], [8, 9]), ([4], [10, 11, 12, 13, 39]), ([5, 6], [4])]
)


def loss_model(seed=0, loss=CrossEntropy):
    base = build_transformer_model(dict(CONFIG), application="unilm")
    randomize(base, seed)
    output = loss(2)(base.inputs + base.outputs)
    return base, keras.Model(base.inputs, output)


def test_loss_and_one_step_equal_seq2seq_trainer_baseline():
    """Also: compute_loss sees the int32 ids as floats, as under Keras 2."""
    base, model = loss_model(loss=Recorded)
    ours = build_ours(dict(CONFIG), application="unilm")
    ours.set_weights(base.get_weights())

    model.compile(optimizer=Adam(1e-3))
    generator = Batches([BATCH], batch_size=1)
    history = model.fit(
        generator.forfit(), steps_per_epoch=len(generator), verbose=0
    )

    trainer = Seq2SeqTrainer(ours, strategy="baseline")
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-6))
    expected = trainer.fit(
        x=BATCH, batch_size=len(BATCH[0]), shuffle=False, verbose=0
    )

    loss, reference = history.history["loss"][0], expected.history["loss"][0]
    assert abs(loss - reference) < 1e-5
    assert loss > 1.0  # a real cross-entropy over 40 tokens, not 0
    assert Recorded.dtypes == ["float32"] * 3
    assert [K.dtype(x) for x in base.inputs] == ["int32", "int32"]
    moved = 0
    for after, theirs in zip(base.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(after, theirs, rtol=0, atol=2e-6)
        moved += 1
    assert moved == len(base.weights) > 20


def test_forfit_takes_batches_of_changing_length():
    """Keras fixes a Python generator's shapes from its first two batches:
    equal lengths there, then a shorter batch, must still train."""
    _, model = loss_model()
    model.compile(optimizer=Adam(1e-3))
    long = unilm_batch([([5, 6], [7])], length=9)
    short = unilm_batch([([5], [7])], length=5)
    generator = Batches([long, long, short], batch_size=1)
    history = model.fit(
        generator.forfit(), steps_per_epoch=len(generator), verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(
    "axis, expected", [(None, 3), (2, 1), ([0, 2], 2), (0, 1)]
)
def test_output_axis(axis, expected):
    base = build_transformer_model(dict(CONFIG), application="unilm")
    layer = CrossEntropy(axis)
    outputs = layer(base.inputs + base.outputs)
    count = len(outputs) if isinstance(outputs, list) else 1
    assert count == expected
    if axis == 2:
        assert outputs.shape == base.outputs[0].shape
        assert outputs.dtype == base.outputs[0].dtype
    if axis == 0:
        assert outputs.dtype == "int32"
    assert CrossEntropy.from_config(layer.get_config()).output_axis == axis


def test_predict_through_the_loss_layer():
    """Scripts decode with the trained Model, Loss layer included."""
    base, model = loss_model()
    probas = model.predict(list(BATCH), verbose=0)
    np.testing.assert_allclose(
        probas, base.predict(list(BATCH), verbose=0), rtol=1e-6
    )
    np.testing.assert_allclose(probas.sum(-1), 1.0, rtol=1e-5)


def test_loss_without_compute_loss_says_so():
    base = build_transformer_model(dict(CONFIG), application="unilm")
    model = keras.Model(base.inputs, Loss(2)(base.inputs + base.outputs))
    model.compile(optimizer=Adam(1e-3))
    with pytest.raises(NotImplementedError, match="compute_loss"):
        model.fit(Batches([BATCH], 1).forfit(), steps_per_epoch=1, verbose=0)


def test_keras_layers_are_reexported_and_bert4keras_own_ones_explained():
    import compat.layers as layers
    from compat import UnsupportedError

    assert layers.Dense is keras.layers.Dense
    assert layers.Lambda is keras.layers.Lambda
    with pytest.raises(UnsupportedError, match="ConditionalRandomField"):
        from compat.layers import ConditionalRandomField  # noqa: F401
    with pytest.raises(AttributeError):
        layers.NoSuchLayer
