"""Layers against NumPy: masks, embeddings, attention (full and cached)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from models import layers as L

# Two rows: a 3-token source + 2 targets, and 2 + 1 then one padding.
TOKENS = np.array([[5, 6, 7, 8, 9], [4, 5, 6, 7, 0]], "int32")
SEGMENTS = np.array([[0, 0, 0, 1, 1], [0, 0, 1, 1, 0]], "int32")


def numpy_visible(token_ids, segment_ids, kind):
    """The rule of `visible_keys`, one (row, query, key) at a time; what
    padding queries see does not matter (their outputs are never read)."""
    batch, length = token_ids.shape
    visible = np.zeros((batch, length, length), bool)
    for n in range(batch):
        for i in range(length):
            for j in range(length):
                if token_ids[n, j] == 0:
                    continue
                if kind == "encoder":
                    visible[n, i, j] = True
                elif kind == "lm":
                    visible[n, i, j] = j <= i
                else:  # a source key is seen by all, a target key causally
                    visible[n, i, j] = segment_ids[n, j] == 0 or (
                        segment_ids[n, i] == 1 and j <= i
                    )
    return visible


@pytest.mark.parametrize("kind", L.ATTENTION_KINDS)
def test_visible_keys_follow_the_rule(kind):
    got = ops.convert_to_numpy(L.visible_keys(TOKENS, SEGMENTS, kind))
    expected = numpy_visible(TOKENS, SEGMENTS, kind)
    got = np.broadcast_to(got, expected.shape)
    queries = TOKENS != 0
    np.testing.assert_array_equal(got[queries], expected[queries])


def test_unknown_attention_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown attention kind"):
        L.AttentionBias("bidirectional")


def test_attention_bias_is_float32_zero_or_mask_bias():
    bias = L.AttentionBias("unilm")([TOKENS, SEGMENTS])
    assert tuple(bias.shape) == (2, 1, 5, 5)
    assert keras.backend.standardize_dtype(bias.dtype) == "float32"
    visible = numpy_visible(TOKENS, SEGMENTS, "unilm")
    expected = np.where(visible, 0, L.MASK_BIAS)
    queries = TOKENS != 0
    got = ops.convert_to_numpy(bias)[:, 0]
    np.testing.assert_array_equal(got[queries], expected[queries])


def test_gelu_is_the_erf_form_and_unknown_activations_fail():
    x = np.linspace(-3, 3, 13).astype("float32")
    erf = np.vectorize(math.erf)
    expected = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    got = ops.convert_to_numpy(L.get_activation("gelu")(x))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown hidden_act"):
        L.get_activation("swish")


def test_embedding_dense_mode_is_the_transposed_table():
    layer = L.Embedding(11, 4)
    layer.build((None,))
    table = ops.convert_to_numpy(layer.embeddings)
    hidden = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    got = ops.convert_to_numpy(layer(hidden, mode="dense"))
    np.testing.assert_allclose(got, hidden @ table.T, rtol=1e-5, atol=1e-6)
    ids = np.array([[1, 10]])
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(ids)), table[ids])


def test_position_embedding_offsets_one_or_per_row():
    layer = L.PositionEmbedding(16, 4)
    x = np.zeros((2, 3, 4), "float32")
    layer.build(x.shape)
    table = ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x)), np.stack([table[:3]] * 2)
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x, offset=5)), np.stack([table[5:8]] * 2)
    )
    starts = np.array([[2], [9]], "int32")  # one start per row
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer(x, offset=starts)),
        np.stack([table[2:5], table[9:12]]),
    )


def tensor(x):
    """Attention takes tensors only (it casts its inputs itself)."""
    return ops.convert_to_tensor(np.asarray(x, "float32"))


def attention_layer(heads=2, size=3, width=6, seed=0):
    keras.utils.set_random_seed(seed)
    layer = L.MultiHeadAttention(heads, size)
    layer.build((None, None, width))
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(0, 0.5, variable.shape))
    return layer


def dense(layer, x):
    kernel, bias = (ops.convert_to_numpy(w) for w in layer.weights)
    return x @ kernel + bias


def numpy_attention(layer, x, bias):
    """Scaled dot-product attention over heads, then the output projection."""
    batch, length, _ = x.shape
    heads, size = layer.heads, layer.head_size

    def split(y):
        return y.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

    q, k, v = (
        split(dense(d, x))
        for d in (layer.q_dense, layer.k_dense, layer.v_dense)
    )
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    mixed = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
    return dense(layer.o_dense, mixed)


def test_attention_matches_numpy_under_a_mask():
    layer = attention_layer()
    x = np.random.default_rng(1).normal(size=(2, 5, 6)).astype("float32")
    bias = L.AttentionBias("unilm")([TOKENS, SEGMENTS])
    got = ops.convert_to_numpy(layer(tensor(x), bias))
    expected = numpy_attention(layer, x, ops.convert_to_numpy(bias))
    keep = TOKENS != 0
    np.testing.assert_allclose(got[keep], expected[keep], atol=1e-5)


def test_attention_returns_the_keys_and_values_it_used():
    layer = attention_layer()
    x = np.random.default_rng(2).normal(size=(1, 4, 6)).astype("float32")
    bias = ops.zeros((1, 1, 4, 4), "float32")
    y, (k, v) = layer(tensor(x), bias, return_kv=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(y),
        ops.convert_to_numpy(layer(tensor(x), bias)),
        atol=0,
    )
    expected_k = dense(layer.k_dense, x).reshape(1, 4, 2, 3)
    np.testing.assert_allclose(ops.convert_to_numpy(k), expected_k, atol=1e-5)
    assert tuple(v.shape) == (1, 4, 2, 3)


def test_cached_attention_equals_attention_over_the_whole_prefix():
    """One new token per row against [its source, its earlier outputs]:
    the last query of the full attention over that sequence. Sources have
    padding; slots after `index` hold garbage that must stay unseen."""
    layer = attention_layer()
    rng = np.random.default_rng(3)
    sources, beams, source_len, index, slots = 2, 3, 4, 2, 5
    source_x = rng.normal(size=(sources, source_len, 6)).astype("float32")
    source_tokens = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    rows = sources * beams
    outputs_x = rng.normal(size=(rows, slots, 6)).astype("float32")
    new_x = rng.normal(size=(rows, 1, 6)).astype("float32")

    def kv(x):  # (batch, length, hidden) -> (batch, 2, heads, length, size)
        _, k, v = layer.project(tensor(x))
        return ops.transpose(ops.stack([k, v], 1), (0, 1, 3, 2, 4))

    cache = L.AttentionCache(
        kv(source_x),
        tensor(np.where(source_tokens != 0, 0.0, L.MASK_BIAS)),
        kv(outputs_x),
        ops.convert_to_tensor(index, "int32"),
    )
    y, (k, v) = layer(tensor(new_x), cache=cache)
    assert tuple(k.shape) == (rows, 1, 2, 3)
    source = np.arange(rows) // beams
    sequences = np.concatenate(
        [source_x[source], outputs_x[:, :index], new_x], axis=1
    )
    keys_seen = np.concatenate(
        [source_tokens[source], np.ones((rows, index + 1))], axis=1
    )
    bias = np.where(keys_seen != 0, 0.0, L.MASK_BIAS)[:, None, None]
    full = layer(tensor(sequences), tensor(bias))
    np.testing.assert_allclose(
        ops.convert_to_numpy(y)[:, 0],
        ops.convert_to_numpy(full)[:, -1],
        atol=1e-5,
    )


def test_feed_forward_and_bias_add():
    layer = L.FeedForward(5, "relu")
    x = np.random.default_rng(4).normal(size=(2, 3, 4)).astype("float32")
    got = ops.convert_to_numpy(layer(x))
    inner = np.maximum(dense(layer.inner_dense, x), 0)
    np.testing.assert_allclose(got, dense(layer.outer_dense, inner), atol=1e-5)
    bias_add = L.BiasAdd()
    bias_add.build((None, 4))
    bias_add.bias.assign([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(bias_add(np.zeros((1, 4), "float32"))),
        [[1.0, 2.0, 3.0, 4.0]],
    )


@pytest.mark.parametrize(
    "layer",
    [
        L.MultiHeadAttention(4, 8, 0.1, name="attention"),
        L.FeedForward(16, "gelu_new"),
        L.PositionEmbedding(32, 8),
        L.AttentionBias("lm"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer):
    config = layer.get_config()
    again = type(layer).from_config(config)
    assert again.get_config() == config


def test_fused_attention_equals_the_written_out_path():
    """`ops.dot_product_attention` under the UniLM mask, and the path
    dropout needs, on the same weights."""
    layer = attention_layer()
    x = tensor(np.random.default_rng(4).normal(size=(2, 5, 6)))
    bias = L.AttentionBias("unilm")([TOKENS, SEGMENTS])
    fused = ops.convert_to_numpy(layer(x, bias))
    layer.fused = False
    written = ops.convert_to_numpy(layer(x, bias))
    np.testing.assert_allclose(fused, written, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_fused_attention_under_mixed_precision(policy):
    """Close to float32, and finite for a row that sees no key at all (an
    all-padding row): the mask is never a -1e9 in float16."""
    layer = attention_layer()
    low = L.MultiHeadAttention(2, 3, dtype=policy)
    low.build((None, None, 6))
    for mine, theirs in zip(low.weights, layer.weights):
        mine.assign(theirs)
    x = np.random.default_rng(5).normal(size=(2, 5, 6)).astype("float32")
    tokens = np.array(TOKENS)
    tokens[1] = 0  # no visible key in row 1
    bias = L.AttentionBias("unilm")([tokens, SEGMENTS])
    got = ops.convert_to_numpy(ops.cast(low(tensor(x), bias), "float32"))
    want = ops.convert_to_numpy(layer(tensor(x), bias))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[0], want[0], atol=0.05)
