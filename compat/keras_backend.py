"""`K`: the Keras 2 backend functions bert4keras scripts call, on keras.ops.

bert4keras hands scripts `keras.backend` as `K`. Keras 3 moved its tensor
functions to `keras.ops`, some with other defaults (`concatenate` joins axis
0, `argmax` flattens, `cumsum` flattens, `expand_dims` needs an axis). The
functions here keep Keras 2's names, argument order and defaults and run on
every Keras 3 backend, inside a layer's `call` or on arrays. Functions that
cannot exist on Keras 3 (the learning phase, sessions, `K.function`,
`K.gradients`) raise an error naming what to do instead; so does any other
name that is not here.

One difference no function can hide: Keras 2 inputs were float32 by
default, this toolkit's models take int32 token and segment ids. `Loss`
(compat.layers) hands its `compute_loss` float inputs as Keras 2 did; in
other code cast with `K.cast(x, K.floatx())` before mixing with floats.
"""

import keras
import numpy as np
from keras import ops

from compat._unsupported import PORTING
from compat._unsupported import unsupported

# Configuration and state ---------------------------------------------------


def floatx():
    return keras.config.floatx()


def set_floatx(value):
    keras.config.set_floatx(value)


def epsilon():
    return keras.config.epsilon()


def set_epsilon(value):
    keras.config.set_epsilon(value)


def image_data_format():
    return keras.config.image_data_format()


def backend():
    return keras.backend.backend()


def clear_session():
    keras.utils.clear_session()


def symbolic(f):
    """bert4keras's identity decorator for old Keras versions."""
    return f


# Tensors -------------------------------------------------------------------


def is_tensor(x):
    return ops.is_tensor(x)


def is_keras_tensor(x):
    return keras.backend.is_keras_tensor(x)


def variable(value, dtype=None, name=None):
    return keras.Variable(value, dtype=dtype or floatx(), name=name)


def constant(value, dtype=None, shape=None, name=None):
    value = ops.convert_to_tensor(value, dtype=dtype or floatx())
    return value if shape is None else ops.broadcast_to(value, shape)


def zeros(shape, dtype=None, name=None):
    return ops.zeros(shape, dtype=dtype or floatx())


def ones(shape, dtype=None, name=None):
    return ops.ones(shape, dtype=dtype or floatx())


def eye(size, dtype=None, name=None):
    return ops.eye(size, dtype=dtype or floatx())


def zeros_like(x, dtype=None, name=None):
    return ops.zeros_like(x, dtype=dtype)


def ones_like(x, dtype=None, name=None):
    return ops.ones_like(x, dtype=dtype)


def arange(start, stop=None, step=1, dtype="int32"):
    return ops.arange(start, stop, step, dtype=dtype)


def cast(x, dtype):
    return ops.cast(x, dtype)


def dtype(x):
    return keras.backend.standardize_dtype(x.dtype)


def shape(x):
    """The dynamic shape, indexable as Keras 2's: `K.shape(x)[0]`."""
    return ops.shape(x)


def int_shape(x):
    """The static shape: a tuple of ints, None where unknown."""
    return tuple(None if d is None else int(d) for d in x.shape)


def ndim(x):
    return len(x.shape)


def count_params(x):
    return int(np.prod(x.shape))


def get_value(x):
    return ops.convert_to_numpy(x)


def eval(x):
    return ops.convert_to_numpy(x)


def batch_get_value(xs):
    return [get_value(x) for x in xs]


def set_value(x, value):
    x.assign(value)


def batch_set_value(tuples):
    for x, value in tuples:
        x.assign(value)


def update(x, new_x):
    x.assign(new_x)
    return x


def update_add(x, increment):
    x.assign_add(increment)
    return x


def update_sub(x, decrement):
    x.assign_sub(decrement)
    return x


# Reductions ----------------------------------------------------------------


def sum(x, axis=None, keepdims=False):
    return ops.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return ops.mean(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):
    return ops.max(x, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):
    return ops.min(x, axis=axis, keepdims=keepdims)


def prod(x, axis=None, keepdims=False):
    return ops.prod(x, axis=axis, keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    return ops.std(x, axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False):
    return ops.var(x, axis=axis, keepdims=keepdims)


def any(x, axis=None, keepdims=False):
    return ops.any(x, axis=axis, keepdims=keepdims)


def all(x, axis=None, keepdims=False):
    return ops.all(x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return ops.logsumexp(x, axis=axis, keepdims=keepdims)


def argmax(x, axis=-1):
    return ops.argmax(x, axis=axis)


def argmin(x, axis=-1):
    return ops.argmin(x, axis=axis)


def cumsum(x, axis=0):
    return ops.cumsum(x, axis=axis)


def cumprod(x, axis=0):
    return ops.cumprod(x, axis=axis)


# Element-wise --------------------------------------------------------------


def square(x):
    return ops.square(x)


def sqrt(x):
    return ops.sqrt(x)


def exp(x):
    return ops.exp(x)


def log(x):
    return ops.log(x)


def abs(x):
    return ops.abs(x)


def sign(x):
    return ops.sign(x)


def round(x):
    return ops.round(x)


def sin(x):
    return ops.sin(x)


def cos(x):
    return ops.cos(x)


def pow(x, a):
    return ops.power(x, a)


def clip(x, min_value, max_value):
    return ops.clip(x, min_value, max_value)


def maximum(x, y):
    return ops.maximum(x, y)


def minimum(x, y):
    return ops.minimum(x, y)


def equal(x, y):
    return ops.equal(x, y)


def not_equal(x, y):
    return ops.not_equal(x, y)


def greater(x, y):
    return ops.greater(x, y)


def greater_equal(x, y):
    return ops.greater_equal(x, y)


def less(x, y):
    return ops.less(x, y)


def less_equal(x, y):
    return ops.less_equal(x, y)


def switch(condition, then_expression, else_expression):
    """Keras 2's `switch`; either branch may be a callable."""
    if callable(then_expression):
        then_expression = then_expression()
    if callable(else_expression):
        else_expression = else_expression()
    return ops.where(condition, then_expression, else_expression)


def where(condition, x, y):
    """bert4keras's `K.where`: broadcasting `where`, scalars allowed."""
    return ops.where(condition, x, y)


def stop_gradient(variables):
    if isinstance(variables, (list, tuple)):
        return [ops.stop_gradient(v) for v in variables]
    return ops.stop_gradient(variables)


# Activations and losses ----------------------------------------------------


def softmax(x, axis=-1):
    return ops.softmax(x, axis=axis)


def softplus(x):
    return ops.softplus(x)


def softsign(x):
    return ops.soft_sign(x)


def relu(x, alpha=0.0, max_value=None, threshold=0.0):
    return keras.activations.relu(
        x, negative_slope=alpha, max_value=max_value, threshold=threshold
    )


def elu(x, alpha=1.0):
    return keras.activations.elu(x, alpha=alpha)


def sigmoid(x):
    return ops.sigmoid(x)


def hard_sigmoid(x):
    return keras.activations.hard_sigmoid(x)


def tanh(x):
    return ops.tanh(x)


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Keras 2 casts the targets to integers; so does this."""
    target = ops.cast(target, "int32")
    return ops.sparse_categorical_crossentropy(
        target, output, from_logits=from_logits, axis=axis
    )


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    return ops.categorical_crossentropy(
        target, output, from_logits=from_logits, axis=axis
    )


def binary_crossentropy(target, output, from_logits=False):
    return ops.binary_crossentropy(target, output, from_logits=from_logits)


def l2_normalize(x, axis=None):
    """x / max(||x||, 1e-6), over all axes when `axis` is None."""
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squares, 1e-12))


# Shapes --------------------------------------------------------------------


def dot(x, y):
    """Keras 2's `dot`: the last axis of x against the second-to-last of y
    (a plain matrix product when y has two axes)."""
    if len(y.shape) <= 2:
        return ops.matmul(x, y)
    return ops.tensordot(x, y, axes=[[len(x.shape) - 1], [len(y.shape) - 2]])


def transpose(x):
    return ops.transpose(x)


def permute_dimensions(x, pattern):
    return ops.transpose(x, pattern)


def reshape(x, shape, *more):
    if more:
        raise unsupported(
            "K.reshape(tensor, shape, axis, ...)",
            "bert4keras's per-axis form is not provided; pass the whole "
            "shape to K.reshape (keras.ops.reshape)",
        )
    return ops.reshape(x, shape)


def flatten(x):
    return ops.reshape(x, (-1,))


def batch_flatten(x):
    return ops.reshape(x, (ops.shape(x)[0], -1))


def expand_dims(x, axis=-1):
    return ops.expand_dims(x, axis)


def squeeze(x, axis):
    return ops.squeeze(x, axis)


def concatenate(tensors, axis=-1):
    return ops.concatenate(tensors, axis=axis)


def stack(x, axis=0):
    return ops.stack(x, axis=axis)


def tile(x, n):
    return ops.tile(x, n)


def repeat(x, n):
    """(batch, dim) -> (batch, n, dim), as Keras 2's `repeat`."""
    return ops.repeat(ops.expand_dims(x, 1), n, axis=1)


def repeat_elements(x, rep, axis):
    return ops.repeat(x, rep, axis=axis)


def one_hot(indices, num_classes):
    return ops.one_hot(indices, num_classes)


def gather(reference, indices):
    return ops.take(reference, indices, axis=0)


# Random --------------------------------------------------------------------


def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return keras.random.uniform(
        shape, minval=minval, maxval=maxval, dtype=dtype, seed=seed
    )


def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return keras.random.normal(
        shape, mean=mean, stddev=stddev, dtype=dtype, seed=seed
    )


def random_binomial(shape, p=0.0, dtype=None, seed=None):
    draw = keras.random.uniform(shape, seed=seed)
    return ops.cast(ops.less(draw, p), dtype or floatx())


# What Keras 3 has no place for ---------------------------------------------

_NO_LEARNING_PHASE = (
    "Keras 3 has no global learning phase; take a `training` argument in "
    "your layer's call() and pass it on"
)

UNSUPPORTED = {
    "learning_phase": _NO_LEARNING_PHASE,
    "set_learning_phase": _NO_LEARNING_PHASE,
    "in_train_phase": _NO_LEARNING_PHASE,
    "in_test_phase": _NO_LEARNING_PHASE,
    "function": "call a keras.Model (or keras.ops eagerly) instead",
    "gradients": (
        "take gradients in a custom train_step (tf.GradientTape or "
        "jax.grad), as models/backend.py does"
    ),
    "get_session": "TensorFlow 1 sessions do not exist on Keras 3",
    "set_session": "TensorFlow 1 sessions do not exist on Keras 3",
    "placeholder": "use keras.Input",
    "batch_dot": "use keras.ops.einsum, which says which axes meet",
    "rnn": "use keras.layers.RNN",
}


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in UNSUPPORTED:
        raise unsupported(f"K.{name}", UNSUPPORTED[name])
    hint = f"use keras.ops.{name} (check its arguments)"
    if not hasattr(ops, name):
        hint = f"write it with keras.ops; {PORTING}"
    raise unsupported(f"K.{name}", f"it is not in compat's K: {hint}")
