"""compat.backend: K keeps Keras 2's argument order and defaults.

Expected values are NumPy translations of Keras 2's documented behaviour;
the same functions run eagerly and inside a layer's `call`.
"""

import keras
import numpy as np
import pytest

from compat.backend import K
from compat.backend import piecewise_linear

RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4)).astype("float32")
Y = RNG.normal(size=(2, 3, 4)).astype("float32")


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


# (K expression, NumPy value of Keras 2's behaviour) on X and Y.
CASES = {
    "concatenate joins the last axis": (
        lambda x, y: K.concatenate([x, y]),
        lambda x, y: np.concatenate([x, y], -1),
    ),
    "argmax over the last axis": (
        lambda x, y: K.cast(K.argmax(x), "float32"),
        lambda x, y: x.argmax(-1).astype("float32"),
    ),
    "cumsum over axis 0": (
        lambda x, y: K.cumsum(x),
        lambda x, y: np.cumsum(x, 0),
    ),
    "expand_dims at the end": (
        lambda x, y: K.expand_dims(x),
        lambda x, y: x[..., None],
    ),
    "sum, mean, max with keepdims": (
        lambda x, y: K.sum(x, 1, True) + K.mean(x, -1, True) * K.max(x),
        lambda x, y: (
            x.sum(1, keepdims=True) + x.mean(-1, keepdims=True) * x.max()
        ),
    ),
    "softmax, logsumexp": (
        lambda x, y: K.softmax(x) + K.logsumexp(y, axis=1, keepdims=True),
        lambda x, y: np_softmax(x) + np.log(np.exp(y).sum(1, keepdims=True)),
    ),
    "dot of a 3-D and a 3-D tensor (Theano rule)": (
        lambda x, y: K.dot(x, K.permute_dimensions(y, (0, 2, 1))),
        lambda x, y: np.tensordot(x, y.transpose(0, 2, 1), [[2], [1]]),
    ),
    "dot with a matrix": (
        lambda x, y: K.dot(x, K.transpose(y[0])),
        lambda x, y: x @ y[0].T,
    ),
    "repeat and repeat_elements": (
        lambda x, y: K.repeat(x[:, 0], 2) + K.repeat_elements(x[:, :1], 2, 1),
        lambda x, y: np.repeat(x[:, None, 0], 2, 1) + np.repeat(x[:, :1], 2, 1),
    ),
    "l2_normalize over all axes": (
        lambda x, y: K.l2_normalize(x),
        lambda x, y: x / np.sqrt((x**2).sum()),
    ),
    "switch and where broadcast": (
        lambda x, y: (
            K.switch(K.greater(x, 0), x, lambda: y) + K.where(x > 0, 1.0, -1.0)
        ),
        lambda x, y: np.where(x > 0, x, y) + np.where(x > 0, 1.0, -1.0),
    ),
    "clip, pow, sqrt, square, abs, exp, log": (
        lambda x, y: (
            K.clip(x, -0.5, 0.5)
            + K.pow(K.abs(x), 3)
            + K.sqrt(K.square(y))
            + K.log(K.exp(x))
        ),
        lambda x, y: np.clip(x, -0.5, 0.5) + np.abs(x) ** 3 + np.abs(y) + x,
    ),
    "one_hot, gather, stack, tile": (
        lambda x, y: (
            K.one_hot(K.cast(K.argmax(x), "int32"), 4)
            + K.gather(y, [1, 0])
            + K.stack([x[:, 0], y[:, 0], x[:, 1]], axis=1)
            + K.tile(x[:, :1], (1, 3, 1))
        ),
        lambda x, y: (
            np.eye(4)[x.argmax(-1)]
            + y[[1, 0]]
            + np.stack([x[:, 0], y[:, 0], x[:, 1]], 1)
            + np.tile(x[:, :1], (1, 3, 1))
        ),
    ),
    "reshape, flatten, batch_flatten, squeeze": (
        lambda x, y: (
            K.reshape(K.flatten(x), (2, 3, 4))
            + K.reshape(K.batch_flatten(y), (2, 3, 4))
            + K.squeeze(K.expand_dims(x, 1), 1)
        ),
        lambda x, y: x + y + x,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_equals_keras2(name):
    expression, expected = CASES[name]
    got = K.eval(expression(K.constant(X), K.constant(Y)))
    np.testing.assert_allclose(got, expected(X, Y), rtol=1e-5, atol=1e-5)


# Cases that index or reshape the batch axis by hand: eager only.
BATCH_FIXED = {
    "one_hot, gather, stack, tile",
    "reshape, flatten, batch_flatten, squeeze",
}


def test_inside_a_layer_call():
    """Traced in a functional model, as scripts use K in Lambda layers."""
    names = sorted(set(CASES) - BATCH_FIXED)
    x_in, y_in = keras.Input((3, 4)), keras.Input((3, 4))
    outputs = [
        keras.layers.Lambda(lambda xs, e=CASES[name][0]: e(*xs))([x_in, y_in])
        for name in names
    ]
    model = keras.Model([x_in, y_in], outputs)
    for got, name in zip(model.predict([X, Y], verbose=0), names):
        np.testing.assert_allclose(
            got, CASES[name][1](X, Y), rtol=1e-5, atol=1e-5, err_msg=name
        )


def test_losses_take_float_targets_as_keras2():
    probas = np_softmax(X)
    targets = np.array([[0, 3, 1], [2, 2, 0]], dtype="float32")
    got = K.eval(K.sparse_categorical_crossentropy(targets, probas))
    picked = np.take_along_axis(probas, targets.astype(int)[..., None], -1)
    np.testing.assert_allclose(got, -np.log(picked[..., 0]), rtol=1e-5)
    logits = K.sparse_categorical_crossentropy(targets, X, from_logits=True)
    np.testing.assert_allclose(K.eval(logits), got, rtol=1e-5)
    onehot = np.eye(4, dtype="float32")[targets.astype(int)]
    np.testing.assert_allclose(
        K.eval(K.categorical_crossentropy(onehot, probas)), got, rtol=1e-5
    )


def test_shapes_types_and_state():
    x = K.constant(X)
    assert K.int_shape(x) == (2, 3, 4) and K.ndim(x) == 3
    assert K.shape(x)[0] == 2 and K.count_params(x) == 24
    assert K.dtype(x) == K.floatx() == "float32"
    assert K.epsilon() == keras.config.epsilon()
    assert K.dtype(K.arange(3)) == "int32"
    assert K.int_shape(keras.Input((None, 7))) == (None, None, 7)
    variable = K.variable(np.zeros(3))
    K.set_value(variable, [1, 2, 3])
    K.update_add(variable, np.ones(3, "float32"))
    np.testing.assert_array_equal(K.get_value(variable), [2, 3, 4])
    K.batch_set_value([(variable, np.zeros(3))])
    assert K.batch_get_value([variable])[0].tolist() == [0, 0, 0]
    assert K.symbolic(len) is len


@pytest.mark.parametrize(
    "schedule, steps, expected",
    [
        (
            {1000: 1, 2000: 0.1},
            [0, 500, 1000, 1500, 2000, 5000],
            [0, 0.5, 1, 0.55, 0.1, 0.1],
        ),
        ({0: 1}, [0, 10], [1, 1]),
        ({0: 2, 10: 1}, [0, 5, 20], [2, 1.5, 1]),
    ],
)
def test_piecewise_linear(schedule, steps, expected):
    got = [float(K.eval(piecewise_linear(step, schedule))) for step in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_piecewise_linear_without_from_zero():
    value = piecewise_linear(50, {100: 1.0, 200: 0.5}, from_zero=False)
    assert float(K.eval(value)) == 1.0
