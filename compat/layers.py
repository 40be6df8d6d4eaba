"""bert4keras.layers on Keras 3: `Loss`, and Keras's own layers.

bert4keras's `Loss` is how its scripts train a model on its own inputs:

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_mask, y_pred = inputs
            ...
    output = CrossEntropy(2)(model.inputs + model.outputs)
    model = keras.Model(model.inputs, output)
    model.compile(optimizer=Adam(1e-5))

The layer adds `compute_loss(...)` with `add_loss` and passes on the input
at `output_axis` (all inputs when None). Keras 3 collects such losses in
`fit` on TensorFlow and JAX alike. Like bert4keras's module, this one
re-exports Keras's layers (`Dense`, `Lambda`, ...) and keeps `Layer` (a
Keras layer that passes masks on); bert4keras's other own layers (CRF,
GlobalPointer, ...) raise an error naming the Keras 3 way.
"""

import keras
from keras import ops

from compat._unsupported import module_getattr

__all__ = ["Layer", "Loss"]


class Layer(keras.layers.Layer):
    """bert4keras's base layer: a Keras layer that passes masks on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True


class Loss(Layer):
    """bert4keras's loss layer: override `compute_loss(inputs, mask)`.

    `compute_loss` sees integer inputs (token and segment ids) as floats,
    as bert4keras scripts saw them under Keras 2, whose `Input` was float32:
    `K.sum(loss * y_mask) / K.sum(y_mask)` then works unchanged. The
    layer's outputs are the inputs as given.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis

    def call(self, inputs, mask=None):
        self.add_loss(self.compute_loss(as_keras2_floats(inputs), mask))
        return self._select(inputs)

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError(
            f"{type(self).__name__} must define compute_loss(inputs, mask)"
        )

    def compute_output_spec(self, inputs, mask=None):
        # Keras 3 would otherwise trace `call`, whose loss is not a tensor
        # while the functional model is being built.
        return self._select(
            keras.tree.map_structure(
                lambda x: keras.KerasTensor(x.shape, x.dtype), inputs
            )
        )

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return self._select(mask)

    def _select(self, items):
        if self.output_axis is None:
            return items
        if isinstance(self.output_axis, (list, tuple)):
            return [items[i] for i in self.output_axis]
        return items[self.output_axis]

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}


def as_keras2_floats(inputs):
    """Integer and boolean tensors cast to floatx; others unchanged."""

    def cast(x):
        if keras.backend.standardize_dtype(x.dtype).startswith(
            ("int", "uint", "bool")
        ):
            return ops.cast(x, keras.config.floatx())
        return x

    return keras.tree.map_structure(cast, inputs)


_NOT_PORTED = (
    "bert4keras's own layer is not ported; build_transformer_model builds "
    "BERT/UniLM from this toolkit's layers (models/layers.py), and Keras 3 "
    "offers keras.layers.{}"
)
_OWN_LAYER = (
    "bert4keras's own layer is not ported; write it as a keras.layers.Layer "
    "with keras.ops"
)

__getattr__ = module_getattr(
    __name__,
    {
        "Embedding": _NOT_PORTED.format("Embedding"),
        "MultiHeadAttention": _NOT_PORTED.format("MultiHeadAttention"),
        "LayerNormalization": _NOT_PORTED.format("LayerNormalization"),
        "PositionEmbedding": _NOT_PORTED.format("Embedding"),
        "FeedForward": _NOT_PORTED.format("Dense"),
        "GlobalAveragePooling1D": (
            "use keras.layers.GlobalAveragePooling1D (it honours masks)"
        ),
        "GlobalMaxPooling1D": _OWN_LAYER,
        "ScaleOffset": _OWN_LAYER,
        "Concatenate1D": _OWN_LAYER,
        "BatchSplit": "use keras.distribution.DataParallel",
        "BatchConcat": "use keras.distribution.DataParallel",
        "GatedAttentionUnit": _OWN_LAYER,
        "SinusoidalPositionEmbedding": _OWN_LAYER,
        "RelativePositionEmbedding": _OWN_LAYER,
        "RelativePositionEmbeddingT5": _OWN_LAYER,
        "ConditionalRandomField": _OWN_LAYER,
        "MaximumEntropyMarkovModel": _OWN_LAYER,
        "GlobalPointer": _OWN_LAYER,
        "EfficientGlobalPointer": _OWN_LAYER,
        "integerize_shape": "Keras 3 shapes are already ints or None",
        "Model": "use keras.Model",
        "Node": "Keras 3 needs no patched Node",
        "NodeBase": "Keras 3 needs no patched Node",
        "custom_objects": "use keras.saving.get_custom_objects()",
    },
    fallback=keras.layers,
)
