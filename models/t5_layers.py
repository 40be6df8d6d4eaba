"""Keras 3 layers of T5 v1.1 / mT5, written with `keras.ops` only.

T5 differs from BERT in three places, each a layer here:

- attention has no biases and no 1/sqrt(d) scaling; positions enter as a
  learned bias on the scores per head, looked up by a bucket of the
  relative distance (`RelativePositionBias`), computed by the first block
  of a stack and shared by all of its blocks;
- the feed-forward network of T5 v1.1 is gated: act(x W0) * (x W1), then
  W2 (`GatedFeedForward`);
- layer normalisation is RMS normalisation without a bias, before each
  sub-layer (Keras's own `RMSNormalization`).

As in `models.layers`, scores, the mask and the softmax run in float32
whatever the compute dtype. Layer structure follows the checkpoints (q, k,
v, o; wi_0, wi_1, wo) so that `weights/t5_mapping.py` maps names one to one.
"""

import math

import keras
from keras import ops

from models.layers import MASK_BIAS
from models.layers import get_activation
from models.layers import serializable

# T5's `feed_forward_proj` activations: "gelu" is the tanh approximation
# there (Hugging Face maps "gated-gelu" to `gelu_new`, as mesh TF does).
T5_ACTIVATIONS = {"gelu": "gelu_new", "gelu_new": "gelu_new", "relu": "relu"}


def relative_position_bucket(
    relative_position, bidirectional, num_buckets, max_distance
):
    """Mesh TensorFlow's bucket of `key - query` distances (int32 tensor).

    Half of the buckets hold exact small distances, the other half
    logarithmically wider bins up to `max_distance`; bidirectional
    attention splits them between keys before and after the query. The
    float expression is Hugging Face's, in its order, so that distances
    on a bin's edge round alike.
    """
    relative_position = ops.cast(relative_position, "int32")
    buckets = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        after = ops.cast(ops.greater(relative_position, 0), "int32")
        buckets = buckets + after * num_buckets
        distance = ops.abs(relative_position)
    else:
        distance = -ops.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = ops.less(distance, max_exact)
    # Small distances never take the logarithm (log 0 is -inf).
    scaled = ops.cast(ops.maximum(distance, 1), "float32") / max_exact
    large = max_exact + ops.cast(
        ops.log(scaled)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact),
        "int32",
    )
    large = ops.minimum(large, num_buckets - 1)
    return buckets + ops.where(is_small, distance, large)


@serializable
class RelativePositionBias(keras.layers.Layer):
    """The learned (buckets, heads) table of a stack's position bias.

    `call(queries, keys)` returns the float32 bias (1, heads, queries,
    keys) added to every block's attention scores; a unidirectional one
    (the decoder's) holds the causal mask too.
    """

    def __init__(
        self,
        heads,
        num_buckets=32,
        max_distance=128,
        bidirectional=True,
        initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.heads = heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.num_buckets, self.heads),
            initializer=self.initializer,
        )

    def call(self, queries, keys):
        """The bias between every position of `queries` and of `keys`
        (tensors whose axis 1 is length); unidirectional, with the causal
        mask added (a decoder's self-attention)."""
        query_len, key_len = ops.shape(queries)[1], ops.shape(keys)[1]
        return self.between(ops.arange(query_len), ops.arange(key_len))

    def between(self, query_positions, key_positions):
        """(1, heads, queries, keys) float32 for these positions."""
        relative = key_positions[None, :] - query_positions[:, None]
        bucket = relative_position_bucket(
            relative, self.bidirectional, self.num_buckets, self.max_distance
        )
        values = ops.take(ops.cast(self.embeddings, "float32"), bucket, 0)
        bias = ops.transpose(values, (2, 0, 1))[None]
        if self.bidirectional:
            return bias
        return bias + ops.where(ops.greater(relative, 0), MASK_BIAS, 0.0)

    def compute_output_spec(self, queries, keys):
        shape = (1, self.heads, queries.shape[1], keys.shape[1])
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "num_buckets": self.num_buckets,
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
            "initializer": keras.initializers.serialize(self.initializer),
        }


class BiasFreeSublayer(keras.layers.Layer):
    """What T5's attention and feed-forward layers share: projections
    without biases from one initializer, and a dropout rate."""

    def __init__(
        self,
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dropout_rate = dropout_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "dropout_rate": self.dropout_rate,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
        }


@serializable
class T5Attention(BiasFreeSublayer):
    """T5's attention: bias-free projections, unscaled scores.

    `call(x, memory, bias)`: queries from `x` (batch, queries, d_model),
    keys and values from `memory` (self-attention: `x` itself), under the
    float32 additive `bias` (position bias and mask). The decoder's cached
    step calls `project_kv` once per source and `attend` on the cache.
    """

    def __init__(
        self,
        heads,
        head_size,
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(dropout_rate, kernel_initializer, **kwargs)
        # The float32 bias must not be cast to the compute dtype (see
        # `models.layers.MultiHeadAttention`).
        self._convert_input_args = False
        self.heads = heads
        self.head_size = head_size
        width = heads * head_size
        self.q_dense = self._dense(width, "q")
        self.k_dense = self._dense(width, "k")
        self.v_dense = self._dense(width, "v")
        self.o_dense = None
        self.dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy
        )

    def build(self, input_shape, memory_shape=None):
        memory_shape = memory_shape or input_shape
        self.q_dense.build(input_shape)
        self.k_dense.build(memory_shape)
        self.v_dense.build(memory_shape)
        self.o_dense = self._dense(input_shape[-1], "o")
        self.o_dense.build((None, self.heads * self.head_size))

    def split_heads(self, x):
        """(batch, length, heads * size) -> (batch, heads, length, size)."""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.heads, self.head_size))
        return ops.transpose(x, (0, 2, 1, 3))

    def project_kv(self, memory):
        """Keys and values of `memory`, (batch, heads, length, size) each."""
        return (
            self.split_heads(self.k_dense(memory)),
            self.split_heads(self.v_dense(memory)),
        )

    def attend(self, q, k, v, bias, training=False):
        """Mix `v` by softmax(q k^T + bias); q, k, v as `split_heads`."""
        scores = ops.einsum("bhqd,bhkd->bhqk", q, k)
        probs = ops.softmax(ops.cast(scores, "float32") + bias, axis=-1)
        probs = self.dropout(
            ops.cast(probs, self.compute_dtype), training=training
        )
        return self.merge(ops.einsum("bhqk,bhkd->bqhd", probs, v))

    def attend_shared(self, q, k, v, bias):
        """`attend` for decoding, where each source's keys and values
        (k, v of `sources` rows) serve its `rows // sources` consecutive
        query rows (beams or samples), without copies. `bias` is
        (sources, 1, 1, keys). Shapes are static here."""
        rows, heads, queries, size = q.shape
        sources = k.shape[0]
        q = ops.reshape(q, (sources, rows // sources, heads, queries, size))
        scores = ops.einsum("sghqd,shkd->sghqk", q, k)
        probs = ops.softmax(
            ops.cast(scores, "float32") + bias[:, None], axis=-1
        )
        probs = ops.cast(probs, self.compute_dtype)
        mixed = ops.einsum("sghqk,shkd->sgqhd", probs, v)
        return self.merge(ops.reshape(mixed, (rows, queries, heads, size)))

    def merge(self, mixed):
        """(batch, length, heads, size) -> the output projection."""
        batch, length = ops.shape(mixed)[0], ops.shape(mixed)[1]
        width = self.heads * self.head_size
        return self.o_dense(ops.reshape(mixed, (batch, length, width)))

    def call(self, x, memory=None, bias=0.0, training=False):
        q = self.split_heads(self.q_dense(x))
        k, v = self.project_kv(x if memory is None else memory)
        return self.attend(q, k, v, bias, training=training)

    def compute_output_spec(self, x, memory=None, bias=0.0, training=False):
        return keras.KerasTensor(x.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "head_size": self.head_size,
        }


@serializable
class GatedFeedForward(BiasFreeSublayer):
    """T5's feed-forward network: wo(act(wi_0 x) * wi_1 x), or, not gated
    (T5 v1.0's "relu"), wo(act(wi x)). Dropout before `wo`."""

    def __init__(
        self,
        units,
        activation="gelu_new",
        gated=True,
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(dropout_rate, kernel_initializer, **kwargs)
        self.units = units
        self.activation = activation
        self.gated = gated
        names = ("wi_0", "wi_1") if gated else ("wi",)
        self.inner = [self._dense(units, name) for name in names]
        self.outer = None
        self.dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy
        )

    def build(self, input_shape):
        for dense in self.inner:
            dense.build(input_shape)
        self.outer = self._dense(input_shape[-1], "wo")
        self.outer.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, x, training=False):
        h = get_activation(self.activation)(self.inner[0](x))
        if self.gated:
            h = h * self.inner[1](x)
        return self.outer(self.dropout(h, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "gated": self.gated,
        }


def padding_bias(token_ids):
    """(batch, 1, 1, length) float32: 0 for tokens, MASK_BIAS for padding."""
    bias = ops.where(ops.not_equal(token_ids, 0), 0.0, MASK_BIAS)
    return ops.cast(bias, "float32")[:, None, None, :]
