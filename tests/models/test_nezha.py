"""NEZHA against an independent NumPy reference and a case done by hand.

transformers no longer ships NEZHA, so the reference is written here from
the paper (Wei et al. 2019, section 3.2) and bert4keras's NEZHA: BERT with
no position embeddings, and in every attention layer the fixed sinusoid
r_ij of the clipped distance clip(j - i, -M, M) added to key j and value j
as query i sees them. The reference is itself checked on a two-token case
whose numbers are worked out by hand below. The model must match the
reference to 1e-5 in float32 (full pass, UniLM mask, a checkpoint in the
Google layout, keep_tokens), and its cached decoder must give the full
pass's logits at every step, with distances past M clipped.
"""

import functools
import math

import keras
import numpy as np
import pytest

from models import build_transformer_model
from models.decoding import Seq2SeqDecoder
from models.positions import RelativeAttention
from models.positions import relative_table
from tests.checkpoints import check
from tests.checkpoints import mixed_length_batch
from tests.checkpoints import randomize
from tests.checkpoints import run
from tests.checkpoints import softmax
from tests.checkpoints import unilm_mask
from tests.checkpoints import write_tf_checkpoint
from tests.common import TINY
from weights.formats import model_arrays

# Short enough that a 12-token row has distances past it: clipping counts.
MAX_DISTANCE = 3
NEZHA = {**TINY, "max_relative_position": MAX_DISTANCE}
LENGTHS = [(5, 4), (3, 2), (7, 6)]
make_batch = functools.partial(mixed_length_batch, LENGTHS)

# The hand case: one head of size 2, M = 1, q = k = v = x = [[1, 0], [0, 1]]
# (identity projections). Table rows r = 0, 1, 2 (distance r - 1) are
# [sin r, cos r]. Query 0 sees key 0 at distance 0 (row 1) and key 1 at +1
# (row 2): scores (1 + sin 1)/sqrt 2 and (sin 2)/sqrt 2, softmax p, and
#   out_0 = p_00 (v_0 + [sin 1, cos 1]) + p_01 (v_1 + [sin 2, cos 2]).
# Query 1 sees key 0 at -1 (row 0, [0, 1]) and key 1 at 0 (row 1): scores
# 1/sqrt 2 and (1 + cos 1)/sqrt 2, and
#   out_1 = p_10 (v_0 + [0, 1]) + p_11 (v_1 + [sin 1, cos 1]).
HAND_OUTPUT = np.array(
    [[1.5236637281, 0.5551501617], [0.9057754602, 1.3211382854]]
)


def sinusoid_rows(max_distance, size):
    """The table by loops, as bert4keras's `Sinusoidal` initializer."""
    table = np.zeros((2 * max_distance + 1, size))
    for row in range(2 * max_distance + 1):
        for i in range(size // 2):
            theta = row / np.power(10000, 2.0 * i / size)
            table[row, 2 * i] = np.sin(theta)
            table[row, 2 * i + 1] = np.cos(theta)
    return table


def reference_attention(q, k, v, mask, max_distance):
    """q, k, v (batch, length, heads, size); mask additive (b, 1, L, L)."""
    length, size = q.shape[1], q.shape[-1]
    table = sinusoid_rows(max_distance, size)
    ids = np.array(
        [
            [
                min(max(j - i, -max_distance), max_distance)
                for j in range(length)
            ]
            for i in range(length)
        ]
    )
    r = table[ids + max_distance]  # (query, key, size)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k)
    scores += np.einsum("bqhd,qkd->bhqk", q, r)
    probs = softmax(scores / math.sqrt(size) + mask)
    out = np.einsum("bhqk,bkhd->bqhd", probs, v)
    return out + np.einsum("bhqk,qkd->bqhd", probs, r)


def layer_norm(x, arrays, name, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    normed = (x - mean) / np.sqrt(var + eps)
    return normed * arrays[f"{name}/gamma"] + arrays[f"{name}/beta"]


def gelu(x):
    erf = np.vectorize(math.erf)  # scipy is not a declared dependency
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def dense(x, arrays, name):
    return x @ arrays[f"{name}/kernel"] + arrays[f"{name}/bias"]


def reference_unilm(arrays, token_ids, segment_ids, config):
    """NEZHA's UniLM MLM probabilities in float64, from Google names."""
    a = {name: np.asarray(value, "float64") for name, value in arrays.items()}
    heads = config["num_attention_heads"]
    x = a["bert/embeddings/word_embeddings"][token_ids]
    x = x + a["bert/embeddings/token_type_embeddings"][segment_ids]
    x = layer_norm(x, a, "bert/embeddings/LayerNorm")
    mask = unilm_mask(token_ids, segment_ids).astype("float64")
    batch, length, hidden = x.shape
    for index in range(config["num_hidden_layers"]):
        p = f"bert/encoder/layer_{index}/"
        q, k, v = (
            dense(x, a, p + f"attention/self/{n}").reshape(
                batch, length, heads, -1
            )
            for n in ("query", "key", "value")
        )
        o = reference_attention(q, k, v, mask, config["max_relative_position"])
        o = dense(
            o.reshape(batch, length, hidden), a, p + "attention/output/dense"
        )
        x = layer_norm(x + o, a, p + "attention/output/LayerNorm")
        h = dense(
            gelu(dense(x, a, p + "intermediate/dense")), a, p + "output/dense"
        )
        x = layer_norm(x + h, a, p + "output/LayerNorm")
    h = gelu(dense(x, a, "cls/predictions/transform/dense"))
    h = layer_norm(h, a, "cls/predictions/transform/LayerNorm")
    logits = h @ a["bert/embeddings/word_embeddings"].T
    return softmax(logits + a["cls/predictions/output_bias"])


# The hand case ---------------------------------------------------------------


def test_table_rows_by_hand():
    np.testing.assert_allclose(
        relative_table(1, 2),
        [[0.0, 1.0], [math.sin(1), math.cos(1)], [math.sin(2), math.cos(2)]],
        atol=1e-7,
    )
    # size 4: the second pair turns 100 times slower.
    row = [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]
    np.testing.assert_allclose(relative_table(2, 4)[2], row, atol=1e-7)


def test_reference_attention_by_hand():
    x = np.eye(2)[None, :, None, :]  # (batch 1, length 2, head 1, size 2)
    out = reference_attention(x, x, x, np.zeros((1, 1, 2, 2)), 1)
    np.testing.assert_allclose(out[0, :, 0], HAND_OUTPUT, atol=1e-9)


def test_layer_by_hand():
    layer = RelativeAttention(1, 2, max_distance=1)
    layer.build((1, 2, 2))
    for dense in (layer.q_dense, layer.k_dense, layer.v_dense, layer.o_dense):
        dense.kernel.assign(np.eye(2, dtype="float32"))
        dense.bias.assign(np.zeros(2, "float32"))
    x = keras.ops.convert_to_tensor(np.eye(2, dtype="float32")[None])
    out = layer(x, keras.ops.zeros((1, 1, 2, 2), "float32"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out)[0], HAND_OUTPUT, atol=1e-6
    )


# The model against the reference -------------------------------------------


@pytest.fixture(scope="module")
def nezha_arrays():
    model = build_transformer_model(
        dict(NEZHA), model="nezha", application="unilm"
    )
    randomize(model, seed=0)
    return model_arrays(model)


@pytest.fixture(scope="module")
def nezha_checkpoint(nezha_arrays, tmp_path_factory):
    """The weights in NEZHA's Google layout: BERT's names, no positions."""
    assert "bert/embeddings/position_embeddings" not in nezha_arrays
    prefix = tmp_path_factory.mktemp("nezha") / "model.ckpt"
    return write_tf_checkpoint(nezha_arrays, prefix)


def test_unilm_matches_reference(nezha_arrays, nezha_checkpoint):
    model = build_transformer_model(
        dict(NEZHA), nezha_checkpoint, model="nezha", application="unilm"
    )
    assert "Embedding-Position" not in [layer.name for layer in model.layers]
    token_ids, segment_ids = make_batch()
    keep = token_ids != 0
    expected = reference_unilm(nezha_arrays, token_ids, segment_ids, NEZHA)
    ours = run(model, token_ids, segment_ids)
    check("nezha unilm/tf-ckpt", ours[keep], expected[keep])


def test_keep_tokens_matches_reference_kept_rows(nezha_arrays, tmp_path):
    path = tmp_path / "nezha.safetensors"
    from weights.formats import write_safetensors

    write_safetensors(nezha_arrays, path)
    rng = np.random.default_rng(3)
    keep = [0, 1, 2, 3] + sorted(rng.choice(np.arange(4, 128), 40, False))
    model = build_transformer_model(
        dict(NEZHA),
        path,
        model="nezha",
        application="unilm",
        keep_tokens=keep,
    )
    new_ids, segment_ids = make_batch(seed=2, vocab_size=len(keep))
    old_ids = np.asarray(keep, "int32")[new_ids]
    full = reference_unilm(nezha_arrays, old_ids, segment_ids, NEZHA)
    logits = np.log(full[..., keep])
    keep_rows = new_ids != 0
    check(
        "nezha unilm+keep_tokens",
        run(model, new_ids, segment_ids)[keep_rows],
        softmax(logits)[keep_rows],
    )


def test_cached_decoding_equals_full_pass(nezha_arrays, nezha_checkpoint):
    """Every cached step's logits are the full pass's at that position;
    rows reach distances past M, so clipping is checked on the cache too."""
    model = build_transformer_model(
        dict(NEZHA),
        nezha_checkpoint,
        model="nezha",
        application="unilm",
        with_mlm="linear",
    )
    token_ids, segment_ids = make_batch(seed=4)
    full = run(model, token_ids, segment_ids)
    source_lengths = np.array([s for s, _ in LENGTHS], "int32")
    target_lengths = np.array([t for _, t in LENGTHS])
    steps, rows = int(target_lengths.max()), 2
    sources = np.where(segment_ids == 0, token_ids, 0)
    sources = sources[:, : source_lengths.max()]
    first, cache = model.bert_network.build_cache(
        sources, source_lengths, rows_per_source=rows, slots=steps
    )
    batch = np.arange(len(LENGTHS))
    check(
        "nezha cached: after the source", first, full[batch, source_lengths - 1]
    )
    for step in range(steps):
        position = np.minimum(source_lengths + step, token_ids.shape[1] - 1)
        tokens = np.repeat(token_ids[batch, position], rows).astype("int32")
        logits, _, cache = model.bert_network.call_with_cache(
            tokens, cache, step
        )
        logits = keras.ops.convert_to_numpy(logits)
        real = step < target_lengths
        for beam in range(rows):
            check(
                f"nezha cached: step {step} row {beam}",
                logits[beam::rows][real],
                full[batch[real], position[real]],
            )


def test_fast_decoder_equals_reference_decoder(nezha_checkpoint):
    model = build_transformer_model(
        dict(NEZHA), nezha_checkpoint, model="nezha", application="unilm"
    )
    rng = np.random.default_rng(0)
    sources = [[2] + list(rng.integers(5, 128, n)) + [3] for n in (4, 9, 6, 1)]
    fast = Seq2SeqDecoder(model, end_id=3, maxlen=8)
    reference = Seq2SeqDecoder(model, end_id=3, maxlen=8, reference=True)
    for topk in (1, 3):
        assert fast.beam_search_batch(sources, topk) == (
            reference.beam_search_batch(sources, topk)
        )


def test_saved_model_keeps_its_family(tmp_path):
    model = build_transformer_model(
        dict(NEZHA), model="nezha", application="unilm"
    )
    randomize(model, seed=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.bert_config.model_type == "nezha"
    assert loaded.bert_config.max_relative_position == MAX_DISTANCE
    token_ids, segment_ids = make_batch()
    check(
        "nezha .keras round trip",
        run(loaded, token_ids, segment_ids),
        run(model, token_ids, segment_ids),
    )
