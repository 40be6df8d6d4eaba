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
MODEL_TYPES = ("bert", "roberta", "roformer", "nezha")
# The families whose positions are in the attention, not the embeddings.
ATTENTION_POSITIONS = ("roformer", "nezha")


def check_model_type(model_type: str) -> str:
    """The model type, lower case; a clear error for one not built here."""
    if not isinstance(model_type, str) or model_type.lower() not in MODEL_TYPES:
        raise ValueError(
            f"unknown model_type {model_type!r}; expected one of "
            f"{', '.join(MODEL_TYPES)}"
        )
    return model_type.lower()


def check_supported(values: dict) -> None:
    """Refuse config.json settings that change the network in a way not
    built here (Hugging Face RoFormer's `rotary_value`, ALBERT-style
    factorised embeddings): ignored, they would give wrong outputs."""
    if values.get("rotary_value"):
        raise ValueError(
            "rotary_value: true (rotary positions on the values too) is "
            "not supported; only RoFormer's rotary queries and keys are"
        )
    embedding = values.get("embedding_size")
    if embedding is not None and embedding != values.get("hidden_size"):
        raise ValueError(
            f"embedding_size {embedding} differs from hidden_size "
            f"{values.get('hidden_size')}: factorised embeddings are not "
            "supported"
        )


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
    kind = {"roformer": RotaryAttention, "nezha": RelativeAttention}.get(
        config.model_type, L.MultiHeadAttention
    )
    options = {}
    if kind is RelativeAttention:
        options["max_distance"] = config.max_relative_position
    return kind(
        config.num_attention_heads,
        config.head_size,
        config.attention_probs_dropout_prob,
        kernel_initializer=kernel_initializer,
        name=name,
        **options,
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


# NEZHA ---------------------------------------------------------------------


def relative_table(max_distance: int, size: int) -> np.ndarray:
    """NEZHA's fixed embedding of each clipped distance, (2M+1, size).

    Row r encodes distance r - M; as in NEZHA's code (and bert4keras's
    `Sinusoidal` initializer, Hugging Face's `NezhaRelativePositionsEncoding`)
    the sinusoid is of the row index r, with sin and cos interleaved:
    table[r, 2i] = sin(r / 10000^(2i/size)), table[r, 2i+1] = cos(...).
    """
    rows = np.arange(2 * max_distance + 1, dtype="float64")[:, None]
    angles = rows * rotary_frequencies(size)[None, :]
    table = np.zeros((2 * max_distance + 1, size), "float64")
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table.astype("float32")


def relative_ids(query_positions, key_positions, max_distance):
    """Rows of `relative_table` for each (query, key): clip(k - q) + M."""
    distance = key_positions - query_positions
    return ops.clip(distance, -max_distance, max_distance) + max_distance


@L.serializable
class RelativeAttention(L.MultiHeadAttention):
    """NEZHA's self-attention: BERT's, with r_ij = table[clip(j - i)]
    added to key j and value j as query i sees them (NEZHA, eq. 1-3):

        score_ij = q_i . (k_j + r_ij) / sqrt(d),
        out_i = sum_j p_ij (v_j + r_ij).

    The table is fixed (not a weight), one for keys and values, as in
    bert4keras's NEZHA. Keys and values are cached without r, which
    depends on the query: a cached step adds it for its row's position.
    The scores are written out (no fused kernel takes r).
    """

    def __init__(self, *args, max_distance=64, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_distance = max_distance
        self.table = relative_table(max_distance, self.head_size)

    def relative(self, ids):
        table = ops.convert_to_tensor(self.table, self.compute_dtype)
        return ops.take(table, ids, axis=0)

    def attend(self, q, k, v, bias, training=False):
        positions = ops.arange(ops.shape(q)[1])
        ids = relative_ids(
            positions[:, None], positions[None, :], self.max_distance
        )
        r = self.relative(ids)  # (query, key, size)
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k)
        scores += ops.einsum("bqhd,qkd->bhqk", q, r)
        scores = ops.cast(scores, "float32") * self.scale
        probs = ops.softmax(scores + bias, axis=-1)
        probs = self.dropout(
            ops.cast(probs, self.compute_dtype), training=training
        )
        mixed = ops.einsum("bhqk,bkhd->bqhd", probs, v)
        mixed += ops.einsum("bhqk,qkd->bqhd", probs, r)
        batch, length = ops.shape(mixed)[0], ops.shape(mixed)[1]
        mixed = ops.reshape(mixed, (batch, length, self.heads * self.head_size))
        return self.o_dense(mixed)

    def attend_at(self, q, k, v, cache, positions):
        """`attend_cached` with r: one query per row at `positions`
        (rows, 1), against its source (positions 0, 1, ...), its outputs
        before `cache.index` (slot t at position start + t) and itself."""
        q, k, v = q[:, 0], k[:, 0], v[:, 0]  # (rows, heads, size)
        here = positions[:, 0]
        sources, source_len = cache.source_bias.shape
        beams = q.shape[0] // sources
        slots = cache.outputs.shape[3]
        source = ops.repeat(cache.source, beams, axis=0)
        keys = ops.concatenate(
            [source[:, 0], cache.outputs[:, 0], k[:, :, None]], axis=2
        )
        values = ops.concatenate(
            [source[:, 1], cache.outputs[:, 1], v[:, :, None]], axis=2
        )
        start = here - cache.index
        key_positions = ops.concatenate(
            [
                ops.broadcast_to(
                    ops.arange(source_len), (q.shape[0], source_len)
                ),
                start[:, None] + ops.arange(slots)[None, :],
                here[:, None],
            ],
            axis=1,
        )
        r = self.relative(
            relative_ids(here[:, None], key_positions, self.max_distance)
        )  # (rows, keys, size)
        scores = ops.einsum("rhd,rhkd->rhk", q, keys)
        scores += ops.einsum("rhd,rkd->rhk", q, r)
        scores = ops.cast(scores, "float32") * self.scale
        past = ops.where(ops.arange(slots) < cache.index, 0.0, L.MASK_BIAS)
        bias = ops.concatenate(
            [
                ops.repeat(cache.source_bias, beams, axis=0),
                ops.broadcast_to(
                    ops.cast(past, "float32"), (q.shape[0], slots)
                ),
                ops.zeros((q.shape[0], 1), "float32"),
            ],
            axis=-1,
        )
        probs = ops.softmax(scores + bias[:, None, :], axis=-1)
        probs = ops.cast(probs, self.compute_dtype)
        mixed = ops.einsum("rhk,rhkd->rhd", probs, values)
        mixed += ops.einsum("rhk,rkd->rhd", probs, r)
        rows = q.shape[0]
        mixed = ops.reshape(mixed, (rows, 1, self.heads * self.head_size))
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
        q, k, v = self.project(x)
        if cache is None:
            y = self.attend(q, k, v, bias, training=training)
        else:
            y = self.attend_at(q, k, v, cache, positions)
        if return_kv or cache is not None:
            return y, (k, v)
        return y

    def get_config(self):
        return {**super().get_config(), "max_distance": self.max_distance}
