"""BERT/UniLM against Hugging Face, the UniLM mask, and bad input.

Parity: one random Hugging Face BertForMaskedLM is written as a Google TF
checkpoint, as Hugging Face safetensors and as our converted safetensors;
each must give Hugging Face's outputs to 1e-5 in float32. Hugging Face gets
the UniLM and causal masks as 4-D additive masks built by explicit
loops, independently of `models.layers.visible_keys`. The batch mixes
lengths, and only non-padding positions are compared. Run with `-s` to see
the max abs differences.
"""

import functools
import json

import keras
import numpy as np
import pytest

from models import build_transformer_model
from models.backend import compile_function
from tests.checkpoints import check
from tests.checkpoints import checkpoint_files
from tests.checkpoints import hf_masked_lm
from tests.checkpoints import hf_run
from tests.checkpoints import mixed_length_batch
from tests.checkpoints import run
from tests.checkpoints import softmax
from tests.checkpoints import tiny_model
from tests.checkpoints import unilm_mask
from tests.common import TINY
from weights import CheckpointError
from weights import save_safetensors

# (source length, target length) per sample; padded to the longest.
LENGTHS = [(5, 4), (3, 2), (6, 6)]
make_batch = functools.partial(mixed_length_batch, LENGTHS)


def causal_mask(token_ids):
    """Query i sees key j iff j is a token and j <= i."""
    batch, length = token_ids.shape
    mask = np.full(
        (batch, 1, length, length), np.finfo("float32").min, "float32"
    )
    for n in range(batch):
        for i in range(length):
            for j in range(i + 1):
                if token_ids[n, j] != 0:
                    mask[n, 0, i, j] = 0.0
    return mask


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    """The same random weights in up to three files, plus the torch model.

    Without TensorFlow there is no TF checkpoint: its tests skip and the
    converted file is made from the Hugging Face one instead.
    """
    hf = hf_masked_lm(seed=0)
    root = tmp_path_factory.mktemp("parity")
    return hf, checkpoint_files(hf, root, "google-tf-ckpt")


def source_path(sources, name):
    if name not in sources:
        pytest.skip(f"no {name}: TensorFlow is not installed")
    return sources[name]


SOURCES = ["google-tf-ckpt", "hf-safetensors", "converted-safetensors"]


@pytest.mark.parametrize("source", SOURCES)
def test_encoder_matches_hf(hf_checkpoints, source):
    hf, sources = hf_checkpoints
    model = build_transformer_model(dict(TINY), source_path(sources, source))
    token_ids, segment_ids = make_batch()
    theirs = hf_run(hf.bert, token_ids, segment_ids, token_ids != 0)
    check(
        f"encoder/{source}",
        run(model, token_ids, segment_ids),
        theirs.last_hidden_state.numpy(),
        token_ids != 0,
    )


@pytest.mark.parametrize("source", SOURCES)
def test_unilm_matches_hf(hf_checkpoints, source):
    hf, sources = hf_checkpoints
    path = source_path(sources, source)
    config = path if source == "hf-safetensors" else dict(TINY)
    model = build_transformer_model(config, path, application="unilm")
    token_ids, segment_ids = make_batch()
    mask = unilm_mask(token_ids, segment_ids)
    logits = hf_run(hf, token_ids, segment_ids, mask).logits.numpy()
    check(
        f"unilm/{source}",
        run(model, token_ids, segment_ids),
        softmax(logits),
        token_ids != 0,
    )


def test_lm_matches_hf_causal(hf_checkpoints):
    hf, sources = hf_checkpoints
    model = build_transformer_model(
        dict(TINY), sources["converted-safetensors"], application="lm"
    )
    token_ids, segment_ids = make_batch(seed=1)
    logits = hf_run(
        hf, token_ids, segment_ids, causal_mask(token_ids)
    ).logits.numpy()
    check(
        "lm/converted-safetensors",
        run(model, token_ids, segment_ids),
        softmax(logits),
        token_ids != 0,
    )


def test_keep_tokens_matches_hf_kept_rows(hf_checkpoints):
    hf, sources = hf_checkpoints
    rng = np.random.default_rng(3)
    keep = [0, 1, 2, 3] + sorted(rng.choice(np.arange(4, 128), 40, False))
    model = build_transformer_model(
        dict(TINY),
        sources["converted-safetensors"],
        application="unilm",
        keep_tokens=keep,
    )
    new_ids, segment_ids = make_batch(seed=2, vocab_size=len(keep))
    old_ids = np.asarray(keep, "int32")[new_ids]
    mask = unilm_mask(old_ids, segment_ids)
    logits = hf_run(hf, old_ids, segment_ids, mask).logits.numpy()
    check(
        "unilm+keep_tokens/converted-safetensors",
        run(model, new_ids, segment_ids),
        softmax(logits[..., keep]),
        new_ids != 0,
    )


# The UniLM mask as properties of the outputs.


def source_target_batch(source=5, target=4, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, TINY["vocab_size"], (1, source + target))
    segment_ids = np.array([[0] * source + [1] * target])
    return token_ids.astype("int32"), segment_ids.astype("int32")


@pytest.fixture(scope="module")
def unilm_model():
    return tiny_model("unilm", seed=5)


def test_changing_a_target_token_leaves_earlier_outputs(unilm_model):
    token_ids, segment_ids = source_target_batch()
    before = run(unilm_model, token_ids, segment_ids)
    for position in range(5, 9):
        changed = token_ids.copy()
        changed[0, position] = changed[0, position] % 127 + 1
        after = run(unilm_model, changed, segment_ids)
        moved = np.abs(after - before).max(axis=-1)[0]
        np.testing.assert_allclose(moved[:position], 0.0, atol=1e-6)
        assert (moved[position:] > 1e-4).all(), (position, moved)


def test_changing_a_source_token_changes_every_output(unilm_model):
    token_ids, segment_ids = source_target_batch()
    before = run(unilm_model, token_ids, segment_ids)
    for position in range(5):
        changed = token_ids.copy()
        changed[0, position] = changed[0, position] % 127 + 1
        after = run(unilm_model, changed, segment_ids)
        moved = np.abs(after - before).max(axis=-1)[0]
        assert (moved > 1e-4).all(), (position, moved)


# Bad input: one clear exception each, no chained traceback.


def raises_cleanly(kind, match, call, *args, **kwargs):
    with pytest.raises(kind, match=match) as info:
        call(*args, **kwargs)
    error = info.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return str(error)


def test_missing_config_file(tmp_path):
    raises_cleanly(
        FileNotFoundError,
        "model config not found",
        build_transformer_model,
        tmp_path / "bert_config.json",
    )


def test_invalid_config_json(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text('{"hidden_size": 32,,}')
    raises_cleanly(ValueError, "not valid JSON", build_transformer_model, path)


def test_checkpoint_that_does_not_fit_the_config(tmp_path):
    path = save_safetensors(tiny_model("encoder"), tmp_path / "w.safetensors")
    config = tmp_path / "bert_config.json"
    config.write_text(json.dumps({**TINY, "hidden_size": 48}))
    message = raises_cleanly(
        CheckpointError, "problem", build_transformer_model, config, path
    )
    assert str(path) in message
    assert (
        "bert/encoder/layer_0/attention/self/query/kernel: "
        "checkpoint has (32, 32), model expects (48, 48)"
    ) in message
    assert (
        "bert/embeddings/word_embeddings: checkpoint has (128, 32), "
        "model expects (128, 48)" in message
    )


def test_unknown_model_name():
    raises_cleanly(
        ValueError,
        "unknown model 'gpt2'",
        build_transformer_model,
        dict(TINY),
        model="gpt2",
    )


def test_unknown_application():
    raises_cleanly(
        ValueError,
        "unknown application 'seq2seq'",
        build_transformer_model,
        dict(TINY),
        application="seq2seq",
    )


def test_unknown_override():
    raises_cleanly(
        TypeError,
        r"unknown config overrides: \['hiden_size'\]",
        build_transformer_model,
        dict(TINY),
        hiden_size=64,
    )


def test_call_with_cache_equals_the_full_pass():
    """`build_cache` + `call_with_cache`, one token per row and step, give
    the full pass's logits at the last position of [source + outputs],
    also after rows are reordered (beams kept) and with padded sources."""
    model = tiny_model("unilm")
    network = model.bert_network
    rng = np.random.default_rng(5)
    lengths = np.array([3, 6], "int32")
    token_ids = np.zeros((2, 6), "int32")
    for row, length in enumerate(lengths):
        token_ids[row, :length] = rng.integers(1, TINY["vocab_size"], length)
    beams, steps = 2, 3
    build_cache = compile_function(
        lambda ids, n: network.build_cache(ids, n, beams, steps),
        model.variables,
    )
    call_with_cache = compile_function(network.call_with_cache, model.variables)
    full_pass = compile_function(
        lambda ids, segments: network(ids, segments, output="logits"),
        model.variables,
    )
    logits, cache = build_cache(token_ids, lengths)
    expected = full_pass_last(full_pass, [token_ids[0, :3], token_ids[1, :6]])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), expected, atol=1e-4
    )
    outputs = [[] for _ in range(len(lengths) * beams)]
    for index in range(steps):
        # Each source's two rows swap places: row r continues row r ^ 1.
        rows = np.arange(len(outputs), dtype="int32") ^ 1
        outputs = [list(outputs[r]) for r in rows]
        tokens = rng.integers(1, TINY["vocab_size"], len(outputs))
        for row, token in enumerate(tokens):
            outputs[row].append(int(token))
        cache = cache.reorder(rows)
        logits, hidden, cache = call_with_cache(
            tokens.astype("int32"), cache, np.int32(index)
        )
        prefixes = [
            (token_ids[row // beams, : lengths[row // beams]], ids)
            for row, ids in enumerate(outputs)
        ]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(logits),
            full_pass_last(full_pass, *zip(*prefixes)),
            atol=1e-4,
        )
        assert tuple(hidden.shape) == (len(outputs), TINY["hidden_size"])


def full_pass_last(full_pass, sources, targets=None, length=16):
    """Logits at the last position of each [source (segment 0) + target
    (segment 1)], from `full_pass(token_ids, segment_ids)` over rows padded
    to `length` (padding keys are masked)."""
    token_ids = np.zeros((len(sources), length), "int32")
    segment_ids = np.zeros((len(sources), length), "int32")
    last = []
    for n, source in enumerate(sources):
        target = [] if targets is None else list(targets[n])
        token_ids[n, : len(source) + len(target)] = [*source, *target]
        segment_ids[n, len(source) : len(source) + len(target)] = 1
        last.append(len(source) + len(target) - 1)
    out = keras.ops.convert_to_numpy(full_pass(token_ids, segment_ids))
    return out[np.arange(len(sources)), last]
