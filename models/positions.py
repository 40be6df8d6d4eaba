"""Positions inside attention: RoFormer's rotary and NEZHA's relative ones.

BERT adds a learned position embedding to its inputs (`Embedding-Position`).
RoFormer and NEZHA have none: RoFormer rotates each head's queries and keys
by an angle proportional to their position (Su et al. 2021, "RoFormer:
Enhanced Transformer with Rotary Position Embedding"), and NEZHA adds a
fixed sinusoidal embedding of the clipped distance j - i to the keys and to
the values (Wei et al. 2019, "NEZHA: Neural Contextualized Representation
for Chinese Language Understanding", section 3.2). Either way the encoding
lives in the attention layer, so each family is one subclass of
`layers.MultiHeadAttention`, and the rest of the network (UniLM mask, MLM
head, cached decoding, training strategies) is BERT's.

Positions are explicit wherever they matter: the full pass uses 0..n-1; a
cached decoding step passes each row's true position, so that a token
decoded on the cache is encoded exactly as in the full pass.
"""

import numpy as np
from keras import ops

from models import layers as L

# `BertConfig.model_type` values, Hugging Face's names. 'roberta' is BERT
# (RoBERTa-wwm-ext: a BERT checkpoint).
MODEL_TYPES = ("bert", "roberta", "roformer")
# The families whose positions are in the attention, not the embeddings.
ATTENTION_POSITIONS = ("roformer",)


def check_model_type(model_type: str) -> str:
    """The model type, lower case; a clear error for one not built here."""
    if not isinstance(model_type, str) or model_type.lower() not in MODEL_TYPES:
        raise ValueError(
            f"unknown model_type {model_type!r}; expected one of "
            f"{', '.join(MODEL_TYPES)}"
        )
    return model_type.lower()


def position_embeddings(config, initializer) -> list:
    """BERT's `Embedding-Position` (learned absolute positions added to
    the inputs) in a list, or no layer for a family that has none."""
    if config.model_type in ATTENTION_POSITIONS:
        return []
    return [
        L.PositionEmbedding(
            config.max_position_embeddings,
            config.hidden_size,
            initializer=initializer,
            name="Embedding-Position",
        )
    ]


def build_attention(config, kernel_initializer, name):
    """The self-attention layer of one block of `config`'s family."""
    kind = {"roformer": RotaryAttention}.get(
        config.model_type, L.MultiHeadAttention
    )
    return kind(
        config.num_attention_heads,
        config.head_size,
        config.attention_probs_dropout_prob,
        kernel_initializer=kernel_initializer,
        name=name,
    )


# RoFormer ------------------------------------------------------------------


def rotary_frequencies(size: int) -> np.ndarray:
    """theta_i = 10000^(-2i/size), i < size/2: one angle per pair of
    features (RoFormer's eq. 15), computed in float64 once."""
    return np.power(10000.0, -2.0 * np.arange(size // 2) / size)


def rotate(x, positions):
    """Rotate each pair (x[2i], x[2i+1]) by positions * theta_i.

    `x` is (batch, length, heads, size); `positions` (batch or 1, length)
    integers. The pairs are adjacent features, as in bojone's RoFormer and
    Hugging Face's `RoFormerSelfAttention.apply_rotary_position_embeddings`,
    so that their checkpoints load as they are. Angles are float32.
    """
    size = x.shape[-1]
    theta = ops.convert_to_tensor(rotary_frequencies(size), "float32")
    angles = ops.cast(positions, "float32")[..., None] * theta
    # (batch, length, size/2) -> (batch, length, 1, size): each angle twice.
    sin = ops.repeat(ops.sin(angles), 2, axis=-1)[:, :, None, :]
    cos = ops.repeat(ops.cos(angles), 2, axis=-1)[:, :, None, :]
    pairs = ops.reshape(x, tuple(ops.shape(x)[:-1]) + (size // 2, 2))
    turned = ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
    turned = ops.reshape(turned, ops.shape(x))
    dtype = x.dtype
    return x * ops.cast(cos, dtype) + turned * ops.cast(sin, dtype)


def default_positions(x):
    """0, 1, ..., n-1 for every row of `x` (batch, length, ...)."""
    return ops.arange(ops.shape(x)[1])[None, :]


@L.serializable
class RotaryAttention(L.MultiHeadAttention):
    """RoFormer's self-attention: BERT's, with q and k rotated.

    The keys it returns (`return_kv`) are rotated already, so a decoding
    cache holds them as they are used, and a cached step only rotates its
    own query and key, at its row's position.
    """

    def project(self, x, positions=None):
        q, k, v = super().project(x)
        if positions is None:
            positions = default_positions(x)
        return rotate(q, positions), rotate(k, positions), v
