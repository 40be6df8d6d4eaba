"""load_checkpoint: all problems at once, optional MLM bias, round trips."""

import logging

import keras
import numpy as np
import pytest

from models import build_transformer_model
from tests.checkpoints import tiny_arrays
from tests.checkpoints import tiny_model
from tests.common import TINY
from weights import CheckpointError
from weights import load_checkpoint
from weights import read_keep_tokens
from weights import save_safetensors
from weights.formats import write_safetensors

TOKENS = np.array([[2, 17, 33, 90, 3, 45, 61, 3, 0]], "int32")
SEGMENTS = np.array([[0, 0, 0, 0, 0, 1, 1, 1, 0]], "int32")


def outputs(model, token_ids=TOKENS):
    return keras.ops.convert_to_numpy(model([token_ids, SEGMENTS]))


def fresh(application="unilm", **kwargs):
    return build_transformer_model(
        dict(TINY), application=application, **kwargs
    )


def test_save_safetensors_then_load_gives_identical_outputs(tmp_path):
    model = tiny_model("unilm", seed=1)
    path = save_safetensors(model, tmp_path / "m.safetensors")
    loaded = build_transformer_model(dict(TINY), path, application="unilm")
    np.testing.assert_array_equal(outputs(loaded), outputs(model))


def test_keras_weights_h5_round_trip(tmp_path):
    model = tiny_model("unilm", seed=2)
    model.save_weights(tmp_path / "m.weights.h5")
    loaded = build_transformer_model(
        dict(TINY), tmp_path / "m.weights.h5", application="unilm"
    )
    np.testing.assert_array_equal(outputs(loaded), outputs(model))


def test_keras_weights_mismatch_is_one_line_and_leaves_model(tmp_path):
    tiny_model("unilm").save_weights(tmp_path / "m.weights.h5")
    model = fresh(hidden_size=48)
    before = model.weights[0].numpy().copy()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, tmp_path / "m.weights.h5")
    assert (
        "Embedding-Token/embeddings: file has (128, 32), model expects "
        "(128, 48)" in str(info.value)
    )
    assert "\n" not in str(info.value)
    np.testing.assert_array_equal(model.weights[0].numpy(), before)


def test_missing_mlm_bias_is_a_warning(tmp_path):
    arrays = tiny_arrays()
    del arrays["cls/predictions/output_bias"]
    path = write_safetensors(arrays, tmp_path / "no_bias.safetensors")
    with pytest.warns(UserWarning, match="cls/predictions/output_bias"):
        model = build_transformer_model(dict(TINY), path, application="unilm")
    bias = keras.ops.convert_to_numpy(model.get_layer("MLM-Bias").bias)
    np.testing.assert_array_equal(bias, 0.0)
    embeddings = model.get_layer("Embedding-Token").embeddings
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(embeddings),
        arrays["bert/embeddings/word_embeddings"],
    )


def test_all_problems_reported_together_and_nothing_copied(tmp_path):
    arrays = tiny_arrays()
    del arrays["bert/encoder/layer_1/output/dense/bias"]
    arrays["bert/embeddings/position_embeddings"] = np.zeros((512, 32), "f4")
    path = write_safetensors(arrays, tmp_path / "bad.safetensors")
    model = fresh()
    before = model.weights[0].numpy().copy()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert str(path) in message and "2 problem(s)" in message
    assert (
        "bert/embeddings/position_embeddings: checkpoint has (512, 32), "
        "model expects (64, 32)"
    ) in message
    assert (
        "bert/encoder/layer_1/output/dense/bias: missing from the "
        "checkpoint (model variable Transformer-1-FeedForward/output/"
        "bias)"
    ) in message
    np.testing.assert_array_equal(model.weights[0].numpy(), before)


def test_not_strict_loads_the_rest(tmp_path):
    arrays = tiny_arrays()
    del arrays["bert/encoder/layer_1/output/dense/bias"]
    path = write_safetensors(arrays, tmp_path / "partial.safetensors")
    model = fresh()
    with pytest.warns(UserWarning, match="strict=False"):
        load_checkpoint(model, path, strict=False)
    np.testing.assert_array_equal(
        model.get_layer("Embedding-Token").embeddings.numpy(),
        arrays["bert/embeddings/word_embeddings"],
    )


def test_unexpected_variables_only_logged(tmp_path, caplog):
    arrays = tiny_arrays()
    arrays["bert/pooler/dense/kernel"] = np.zeros((32, 32), "f4")
    path = write_safetensors(arrays, tmp_path / "pooler.safetensors")
    with caplog.at_level(logging.INFO, logger="weights.loader"):
        build_transformer_model(dict(TINY), path, application="unilm")
    assert "bert/pooler/dense/kernel" in caplog.text
    assert all(
        r.levelno == logging.INFO
        for r in caplog.records
        if r.name == "weights.loader"
    )


def test_keep_tokens_slices_embeddings_and_bias(tmp_path):
    arrays = tiny_arrays(seed=4)
    path = write_safetensors(arrays, tmp_path / "full.safetensors")
    keep = [0, 1, 2, 3, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 127]
    model = build_transformer_model(
        dict(TINY), path, application="unilm", keep_tokens=keep
    )
    np.testing.assert_array_equal(
        model.get_layer("Embedding-Token").embeddings.numpy(),
        arrays["bert/embeddings/word_embeddings"][keep],
    )
    np.testing.assert_array_equal(
        model.get_layer("MLM-Bias").bias.numpy(),
        arrays["cls/predictions/output_bias"][keep],
    )


def test_keep_tokens_out_of_range_is_a_clear_error(tmp_path):
    path = write_safetensors(tiny_arrays(), tmp_path / "full.safetensors")
    with pytest.raises(CheckpointError, match="row 500 but .* has 128 rows"):
        build_transformer_model(
            dict(TINY), path, application="unilm", keep_tokens=[0, 1, 500]
        )


def test_keep_tokens_saved_with_the_model_are_not_applied_twice(tmp_path):
    keep = [0, 1, 2, 3, 7, 9, 11, 13, 40, 41]
    model = tiny_model("unilm", seed=6, keep_tokens=keep)
    path = save_safetensors(
        model, tmp_path / "small.safetensors", keep_tokens=keep
    )
    assert read_keep_tokens(path) == keep
    tokens = np.minimum(TOKENS, len(keep) - 1)
    again = build_transformer_model(
        dict(TINY), path, application="unilm", keep_tokens=keep
    )
    np.testing.assert_array_equal(
        outputs(again, tokens), outputs(model, tokens)
    )
    with pytest.raises(CheckpointError, match="already sliced"):
        build_transformer_model(
            dict(TINY), path, application="unilm", keep_tokens=keep[:-1]
        )
    with pytest.raises(CheckpointError, match="read_keep_tokens"):
        build_transformer_model(dict(TINY), path, application="unilm")
