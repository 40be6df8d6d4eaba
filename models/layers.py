"""Keras 3 layers of the BERT family, written with `keras.ops` only.

Every layer (and each activation a config may name) is registered with
Keras under the `exposure_bias` package and has a complete `get_config`, so
that a model holding them saves to `.keras` and loads back with
`keras.models.load_model`, whether it is `models.bert.BertModel` or a plain
functional model built on its outputs (a bert4keras script's training model).

Each layer keeps the structure of Google's checkpoint (query/key/value/output
projections, two feed-forward projections) so that `weights/` can map
variables one to one. Attention scores, the mask and the softmax run in
float32 whatever the compute dtype, so that mixed precision never overflows
the mask constant (USER-NEEDS 8).
"""

import math
from typing import NamedTuple

import keras
from keras import ops

# Added to the scores of hidden keys. It is applied in float32 (see above), so
# a single large constant is safe for every compute dtype.
MASK_BIAS = -1e9

ATTENTION_KINDS = ("encoder", "unilm", "lm")

# The package name Keras records for the classes and functions of models/.
PACKAGE = "exposure_bias"

serializable = keras.saving.register_keras_serializable(package=PACKAGE)


@serializable
def gelu_erf(x):
    """BERT's GELU: the exact erf form, not the tanh approximation."""
    return keras.activations.gelu(x, approximate=False)


@serializable
def gelu_tanh(x):
    """GELU's tanh approximation (GPT-2's; Hugging Face's `gelu_new`)."""
    return keras.activations.gelu(x, approximate=True)


# `hidden_act` values, Hugging Face's names.
ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": keras.activations.relu,
    "tanh": keras.activations.tanh,
}


def get_activation(name):
    """Map a config's `hidden_act` to a Keras activation."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown hidden_act {name!r}; expected one of "
            f"{sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def visible_keys(token_ids, segment_ids, kind):
    """Boolean (batch, query, key) matrix: may query i attend to key j?

    - `encoder`: every non-padding key.
    - `unilm`: bert4keras's seq2seq mask. With c = cumsum(segment_ids), query
      i sees key j iff c[j] <= c[i]: the source (segment 0) sees the whole
      source, a target position sees the source and the target up to itself.
    - `lm`: causal, j <= i.
    Padding keys (token id 0) are never visible.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(
            f"unknown attention kind {kind!r}; expected {ATTENTION_KINDS}"
        )
    key_is_token = ops.not_equal(token_ids, 0)[:, None, :]
    length = ops.shape(token_ids)[1]
    if kind == "encoder":
        visible = ops.ones((1, length, length), dtype="bool")
    elif kind == "unilm":
        index = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
        visible = ops.less_equal(index[:, None, :], index[:, :, None])
    else:
        position = ops.arange(length)
        visible = ops.less_equal(position[None, :], position[:, None])
        visible = visible[None]
    return ops.logical_and(visible, key_is_token)


@serializable
class AttentionBias(keras.layers.Layer):
    """Turns `[token_ids, segment_ids]` into an additive float32 bias.

    Output shape (batch, 1, query, key): 0 where visible, MASK_BIAS elsewhere.
    """

    def __init__(self, kind="encoder", **kwargs):
        super().__init__(**kwargs)
        visible_keys(ops.zeros((1, 1), "int32"), ops.zeros((1, 1)), kind)
        self.kind = kind

    def call(self, inputs):
        token_ids, segment_ids = inputs
        visible = visible_keys(token_ids, segment_ids, self.kind)
        bias = ops.where(visible, 0.0, MASK_BIAS)
        return ops.cast(bias, "float32")[:, None, :, :]

    def compute_output_spec(self, inputs):
        token_ids = inputs[0]
        batch, length = token_ids.shape
        return keras.KerasTensor((batch, 1, length, length), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@serializable
class Embedding(keras.layers.Embedding):
    """Token embedding that can also act as the tied output projection.

    `call(x, mode='dense')` multiplies hidden states by the transposed
    embedding matrix, which is how BERT's MLM head shares its weights.
    """

    def call(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().call(inputs)
        kernel = ops.cast(self.embeddings, self.compute_dtype)
        return ops.matmul(inputs, ops.transpose(kernel))

    def compute_output_spec(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().compute_output_spec(inputs)
        shape = tuple(inputs.shape[:-1]) + (self.input_dim,)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


@serializable
class PositionEmbedding(keras.layers.Layer):
    """Learned absolute positions, added to the input.

    `call(x, offset=k)` uses positions k, k+1, ...; `offset` may also be a
    (batch, 1) tensor, one start per row: the cached decoder feeds one token
    per row, each at its own true position.
    """

    def __init__(
        self, input_dim, output_dim, initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.initializer,
        )

    def call(self, inputs, offset=0):
        length = ops.shape(inputs)[1]
        positions = ops.arange(length)[None, :] + offset
        table = ops.cast(self.embeddings, self.compute_dtype)
        return inputs + ops.take(table, positions, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "initializer": keras.initializers.serialize(self.initializer),
        }


class AttentionCache(NamedTuple):
    """What one new token per row attends to besides itself (decoding).

    Rows are source-major: with b rows (beams or samples) per source, row r
    belongs to source r // b, and a source's rows share its keys and values.
    Heads come before length, so that each step's dot products read the
    cache without a transposed copy (a third of a step's time on CPU
    otherwise).
    """

    source: object  # (sources, 2, heads, source_len, head_size): keys, values
    source_bias: object  # (sources, source_len) float32: 0, or MASK_BIAS
    outputs: object  # (rows, 2, heads, slots, head_size): earlier outputs
    index: object  # slots before this one hold the earlier outputs


@serializable
class MultiHeadAttention(keras.layers.Layer):
    """BERT self-attention with an additive bias.

    `project(x)` gives per-head q, k, v of shape (batch, length, heads,
    head_size); `attend(q, k, v, bias)` mixes them and applies the output
    projection. `attend_cached` is the same attention for one new token per
    row against a key/value cache: the decoder's step, on the same weights.

    With `fused=True` (the default) `attend` hands the scores, mask and
    softmax to `keras.ops.dot_product_attention` whenever no attention
    dropout is drawn (inference, or a rate of 0): on a GPU the backend may
    then run a fused kernel (cuDNN flash attention on JAX), and on every
    backend the softmax stays float32 under mixed precision. The mask goes
    in as booleans, not as the -1e9 bias, because JAX casts a bias to the
    compute dtype (-inf in float16). Dropout on the attention probabilities
    needs them in hand, so a training pass with dropout takes the written-
    out path, which computes the same function.
    """

    def __init__(
        self,
        heads,
        head_size,
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        fused=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Keras casts every float argument of `__call__` to the compute
        # dtype, the float32 bias too (-1e9 -> -inf in float16, and a
        # float32 + float16 add error on TensorFlow). The projections cast
        # `x` themselves, so conversion is switched off here.
        self._convert_input_args = False
        self.heads = heads
        self.head_size = head_size
        self.dropout_rate = dropout_rate
        self.fused = fused
        # One scale for every path (full, fused, cached): a product with
        # the same float, so that the paths round alike.
        self.scale = 1.0 / math.sqrt(head_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        width = heads * head_size
        self.q_dense = self._dense(width, "query")
        self.k_dense = self._dense(width, "key")
        self.v_dense = self._dense(width, "value")
        self.o_dense = self._dense(width, "output")
        self.dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy
        )

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        width = self.heads * self.head_size
        for dense in (self.q_dense, self.k_dense, self.v_dense):
            dense.build(input_shape)
        self.o_dense.build(tuple(input_shape[:-1]) + (width,))

    def _split_heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (batch, length, self.heads, self.head_size))

    def project(self, x, positions=None):
        """Per-head q, k, v. `positions` (batch or 1, length): where the
        tokens of `x` are, for subclasses that encode positions in q and
        k (`models.positions`); BERT's are in its embeddings."""
        q = self._split_heads(self.q_dense(x))
        k = self._split_heads(self.k_dense(x))
        v = self._split_heads(self.v_dense(x))
        return q, k, v

    def attend(self, q, k, v, bias, training=False):
        if self.fused and not (training and self.dropout_rate > 0):
            # The bias is 0 or MASK_BIAS (`AttentionBias`): as booleans.
            visible = ops.greater(bias, 0.5 * MASK_BIAS)
            mixed = ops.dot_product_attention(
                q, k, v, mask=visible, scale=self.scale
            )
        else:
            scores = ops.einsum("bqhd,bkhd->bhqk", q, k)
            scores = ops.cast(scores, "float32") * self.scale
            probs = ops.softmax(scores + bias, axis=-1)
            probs = self.dropout(
                ops.cast(probs, self.compute_dtype), training=training
            )
            mixed = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        batch, length = ops.shape(mixed)[0], ops.shape(mixed)[1]
        mixed = ops.reshape(mixed, (batch, length, self.heads * self.head_size))
        return self.o_dense(mixed)

    def attend_cached(self, q, k, v, cache):
        """`attend` for one query per row, against an `AttentionCache`.

        Keys come in three parts: the row's source (padding hidden), its
        earlier outputs (slots before `cache.index`) and the token itself.
        Scaling, bias and softmax follow `attend`. Works in (source, head,
        beam, key) order, the order of the source cache.
        """
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
        rows, heads, size = q.shape
        sources, source_len = cache.source_bias.shape
        beams = rows // sources
        slots = cache.outputs.shape[3]

        def by_source(x):  # (rows, heads, ...) -> (sources, heads, beams, ...)
            x = ops.reshape(x, (sources, beams) + tuple(x.shape[1:]))
            return ops.swapaxes(x, 1, 2)

        scores = ops.concatenate(
            [
                ops.einsum("bhkd,bhpd->bhkp", by_source(q), cache.source[:, 0]),
                by_source(ops.einsum("rhd,rhtd->rht", q, cache.outputs[:, 0])),
                by_source(ops.sum(q * k, axis=-1)[..., None]),
            ],
            axis=-1,
        )
        scores = ops.cast(scores, "float32") * self.scale
        past_bias = ops.where(ops.arange(slots) < cache.index, 0.0, MASK_BIAS)
        bias = ops.concatenate(
            [
                cache.source_bias,
                ops.broadcast_to(
                    ops.cast(past_bias, "float32"), (sources, slots)
                ),
                ops.zeros((sources, 1), "float32"),
            ],
            axis=-1,
        )
        probs = ops.softmax(scores + bias[:, None, None, :], axis=-1)
        probs = ops.cast(probs, self.compute_dtype)
        past_v = ops.reshape(
            cache.outputs[:, 1], (sources, beams, heads, slots, size)
        )
        mixed = (
            ops.einsum(
                "bhkp,bhpd->bhkd",
                probs[..., :source_len],
                cache.source[:, 1],
            )
            + ops.einsum(
                "bhkt,bkhtd->bhkd",
                probs[..., source_len : source_len + slots],
                past_v,
            )
            + probs[..., -1:] * by_source(v)
        )
        mixed = ops.reshape(ops.swapaxes(mixed, 1, 2), (rows, 1, heads * size))
        return self.o_dense(mixed)

    def call(
        self,
        x,
        bias=None,
        training=False,
        cache=None,
        return_kv=False,
        positions=None,
    ):
        """Self-attention of `x`: every position under `bias`, or, with
        `cache`, one new token per row against the cache (decoding).

        With `return_kv` (always with a cache) also returns the keys and
        values of `x`, (batch, length, heads, head_size) each: what a
        decoder keeps in its cache. `positions`: see `project`.
        """
        q, k, v = self.project(x, positions)
        if cache is None:
            y = self.attend(q, k, v, bias, training=training)
        else:
            y = self.attend_cached(q, k, v, cache)
        if return_kv or cache is not None:
            return y, (k, v)
        return y

    def get_config(self):
        return {
            **super().get_config(),
            "heads": self.heads,
            "head_size": self.head_size,
            "dropout_rate": self.dropout_rate,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "fused": self.fused,
        }


@serializable
class FeedForward(keras.layers.Layer):
    """The position-wise two-layer network of a Transformer block."""

    def __init__(
        self,
        units,
        activation="gelu",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.inner_dense = keras.layers.Dense(
            units,
            activation=get_activation(activation),
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="intermediate",
        )
        self.outer_dense = None

    def build(self, input_shape):
        self.inner_dense.build(input_shape)
        self.outer_dense = keras.layers.Dense(
            input_shape[-1],
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="output",
        )
        self.outer_dense.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, x):
        return self.outer_dense(self.inner_dense(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
        }


@serializable
class BiasAdd(keras.layers.Layer):
    """A learned bias over the last axis (BERT's MLM output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias", shape=(input_shape[-1],), initializer="zeros"
        )

    def call(self, x):
        return x + ops.cast(self.bias, self.compute_dtype)
