"""bert4keras.backend on Keras 3: `keras`, `K`, `piecewise_linear`, ...

`keras` is Keras 3 itself (scripts use `keras.callbacks.Callback`,
`keras.layers.Lambda`, ...); `K` holds the Keras 2 backend functions
(`compat.keras_backend`). `set_gelu` chooses, as in bert4keras, which GELU
`hidden_act: "gelu"` means in the models `compat.models` builds afterwards.
`recompute_grad` and the `RECOMPUTE` environment variable turn on gradient
checkpointing as in bert4keras (`models.remat`). bert4keras's TensorFlow 1
machinery (`tf`, `search_layer`, ...) raises an error naming the Keras 3
way.
"""

import functools
import os

import keras
from keras import ops

from compat import keras_backend as K
from compat._unsupported import module_getattr
from models.layers import gelu_erf
from models.layers import gelu_tanh
from models.remat import checkpointed

__all__ = [
    "K",
    "do_recompute",
    "gelu_erf",
    "gelu_tanh",
    "keras",
    "piecewise_linear",
    "recompute_grad",
    "set_gelu",
    "symbolic",
    "where",
]

symbolic = K.symbolic
where = K.where


def recompute_from(value: str) -> bool:
    """A `RECOMPUTE` value as bert4keras reads it (`strtobool`)."""
    return value.strip().lower() in {"1", "y", "yes", "t", "true", "on"}


# bert4keras reads RECOMPUTE once, when its backend is imported: set it
# before importing compat (or assign `compat.backend.do_recompute`).
do_recompute = recompute_from(os.environ.get("RECOMPUTE", "0"))


def recompute_grad(call):
    """bert4keras's decorator of a layer's `call(self, inputs, **kwargs)`.

    With `do_recompute` (the `RECOMPUTE` environment variable), the
    layer's activations are recomputed in the backward pass instead of
    kept (`keras.remat`, through `models.remat.checkpointed`, which keeps
    its dropout masks the same); without it, `call` itself. Models that
    `compat.models.build_transformer_model` builds then checkpoint each
    Transformer block.
    """
    if not do_recompute:
        return call

    @functools.wraps(call)
    def recomputed(self, inputs, **kwargs):
        flat = keras.tree.flatten(inputs)

        def run(*tensors):
            return call(
                self, keras.tree.pack_sequence_as(inputs, tensors), **kwargs
            )

        return checkpointed(run, [self])(*flat)

    return recomputed


# `set_gelu` version -> the `hidden_act` that computes it (the erf form is
# BERT's, and what "gelu" means unless a script asks for the tanh form).
GELU_ACTS = {"erf": "gelu", "tanh": "gelu_new"}
_gelu = {"version": "erf"}


def set_gelu(version: str) -> None:
    """bert4keras's `set_gelu('erf' | 'tanh')`.

    Models built afterwards by `compat.models.build_transformer_model`
    whose config says `hidden_act: "gelu"` use this form: 'erf' (the
    default, BERT's) or 'tanh' (the approximation). Models built before
    keep theirs; a saved model records the form it was built with.
    """
    version = version.lower()
    if version not in GELU_ACTS:
        raise ValueError(f"gelu version must be erf or tanh, got {version!r}")
    _gelu["version"] = version


def gelu_hidden_act(hidden_act: str) -> str:
    """The `hidden_act` to build with under the current `set_gelu`."""
    if hidden_act != "gelu":
        return hidden_act
    return GELU_ACTS[_gelu["version"]]


def piecewise_linear(t, schedule, from_zero=True):
    """bert4keras's piecewise linear function of the step `t`.

    `schedule` maps steps to values, e.g. `{1000: 1, 2000: 0.1}`: linear
    between listed steps, constant after the last; with `from_zero` (and no
    step 0 listed) it starts from 0 at step 0.
    """
    points = sorted((int(k), float(v)) for k, v in schedule.items())
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    t = ops.cast(t, keras.config.floatx())
    value = ops.full_like(t, points[0][1])
    for (t0, x0), (t1, x1) in zip(points, points[1:] + [points[-1]]):
        slope = (x1 - x0) / (t1 - t0) if t1 != t0 else 0.0
        value = ops.where(t >= t0, x0 + slope * (t - t0), value)
    return value


_OPS = "write it with keras.ops inside a layer's call()"

__getattr__ = module_getattr(
    __name__,
    {
        "tf": "import tensorflow (or jax) yourself; compat needs neither",
        "is_tf_keras": "there is one Keras: Keras 3",
        "get_available_gpus": "use keras.distribution.list_devices('gpu')",
        "search_layer": "use model.get_layer(name)",
        "graph_mode_decorator": "TensorFlow 1 graph mode does not exist",
        "align": _OPS,
        "reshape": "use K.reshape (keras.ops.reshape)",
        "flatten": "use K.flatten or keras.ops.reshape",
        "dtype": "use K.dtype",
        "sequence_masking": _OPS,
        "batch_gather": "use keras.ops.take_along_axis",
        "pool1d": "use keras.layers.MaxPooling1D / AveragePooling1D",
        "divisible_temporal_padding": _OPS,
        "root_mean_square": _OPS,
        "swish": "use keras.activations.silu",
        "leaky_relu": "use keras.activations.leaky_relu",
        "attention_normalize": _OPS,
        "sinusoidal_embeddings": _OPS,
        "Sinusoidal": _OPS,
        "apply_rotary_position_embeddings": _OPS,
        "multilabel_categorical_crossentropy": _OPS,
        "sparse_multilabel_categorical_crossentropy": _OPS,
        "custom_objects": "use keras.saving.get_custom_objects()",
    },
)
