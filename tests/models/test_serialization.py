"""Keras-native saving: every layer serializable, `.keras` round trips.

A model saved with `model.save("m.keras")` and read back with
`keras.models.load_model` must be the same model: the same class, config,
vocabulary rows and outputs, and the cached decoder must give the same
titles on it (the `BertNetwork` is rebuilt, not lost).
"""

import inspect
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from models import layers as L
from models.bert import BertModel
from models.bert import build_transformer_model
from models.decoding import Seq2SeqDecoder
from tests.checkpoints import randomize
from tests.checkpoints import tiny_model
from tests.common import TINY
from tests.common import mixed_batch

KEEP = list(range(0, 2 * TINY["vocab_size"], 2))


def own_layer_classes():
    return [
        value
        for value in vars(L).values()
        if inspect.isclass(value)
        and issubclass(value, keras.layers.Layer)
        and value.__module__ == L.__name__
    ]


def test_every_layer_class_is_registered():
    classes = own_layer_classes()
    assert len(classes) >= 6
    for cls in classes + [BertModel]:
        name = keras.saving.get_registered_name(cls)
        assert name == f"{L.PACKAGE}>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls


def one_layer_of_each_class(model):
    found = {}
    for layer in model.layers:
        if type(layer) in own_layer_classes():
            found.setdefault(type(layer), layer)
    return found


def test_every_layer_round_trips_through_its_config():
    model = build_transformer_model(dict(TINY), application="unilm")
    found = one_layer_of_each_class(model)
    assert set(found) == set(own_layer_classes())
    for layer in found.values():
        serialized = keras.saving.serialize_keras_object(layer)
        revived = keras.saving.deserialize_keras_object(serialized)
        assert type(revived) is type(layer)
        assert revived.get_config() == layer.get_config()


@pytest.mark.parametrize("name", ["gelu_erf", "gelu_tanh"])
def test_activations_round_trip(name):
    function = getattr(L, name)
    serialized = keras.saving.serialize_keras_object(function)
    assert keras.saving.deserialize_keras_object(serialized) is function


def outputs(model):
    token_ids, segment_ids = mixed_batch()
    return keras.ops.convert_to_numpy(
        model([token_ids, segment_ids], training=False)
    )


def round_trip(model, tmp_path):
    path = tmp_path / "m.keras"
    model.save(path)
    return keras.models.load_model(path)


BUILDS = {
    "unilm-keep-tokens": dict(application="unilm", keep_tokens=KEEP),
    "lm": dict(application="lm"),
    "encoder": dict(application="encoder"),
    "encoder-mlm-linear": dict(application="encoder", with_mlm="linear"),
}


@pytest.mark.parametrize("build", BUILDS)
def test_keras_file_round_trip(build, tmp_path):
    model = tiny_model(**BUILDS[build])
    loaded = round_trip(model, tmp_path)
    assert type(loaded) is BertModel
    assert loaded.get_config() == model.get_config()
    assert loaded.name == model.name
    assert loaded.bert_config == model.bert_config
    assert loaded.keep_tokens == model.keep_tokens
    assert loaded.application == model.application
    assert loaded.bert_network.layers.keys() == model.bert_network.layers.keys()
    expected = outputs(model)
    other = tiny_model(seed=1, **BUILDS[build])
    assert not np.allclose(expected, outputs(other), atol=1e-4)
    np.testing.assert_allclose(outputs(loaded), expected, rtol=0, atol=1e-6)


def test_keep_tokens_come_back_as_given(tmp_path):
    loaded = round_trip(tiny_model(keep_tokens=KEEP), tmp_path)
    assert loaded.keep_tokens == KEEP
    assert loaded.bert_config.vocab_size == len(KEEP)


def test_dtype_policy_comes_back(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_transformer_model(
        dict(TINY), application="unilm", dtype="mixed_bfloat16"
    )
    loaded = round_trip(model, tmp_path)
    assert loaded.get_config()["dtype"] == "mixed_bfloat16"
    attention = loaded.get_layer("Transformer-0-MultiHeadSelfAttention")
    assert attention.q_dense.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(outputs(loaded), outputs(model))


def test_wrong_keep_tokens_length_is_an_error():
    with pytest.raises(ValueError, match="3 keep_tokens for a vocab_size"):
        BertModel(dict(TINY), "unilm", keep_tokens=[0, 1, 2])


def test_cached_pass_survives_loading(tmp_path):
    """`build_cache` and `call_with_cache`, what the fast decoder runs."""
    model = tiny_model("unilm", seed=3)
    loaded = round_trip(model, tmp_path)
    token_ids = np.array([[2, 5, 6, 7, 3], [2, 9, 3, 0, 0]], "int32")
    lengths = np.array([5, 3], "int32")
    steps = []
    for network in (model.bert_network, loaded.bert_network):
        logits, cache = network.build_cache(token_ids, lengths, 2, 4)
        step = network.call_with_cache(np.array([8, 9, 10, 11]), cache, 0)
        steps.append([logits, *step[:2]])
    for ours, theirs in zip(*steps):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(theirs),
            keras.ops.convert_to_numpy(ours),
            rtol=0,
            atol=1e-6,
        )


@pytest.mark.slow
def test_loaded_model_decodes_the_same_titles(tmp_path):
    model = tiny_model("unilm", seed=3)
    bias = model.get_layer("MLM-Bias").bias
    bias.assign(np.linspace(-1.0, 1.0, TINY["vocab_size"]).astype("float32"))
    loaded = round_trip(model, tmp_path)
    rng = np.random.default_rng(0)
    sources = [
        [2, *rng.integers(4, TINY["vocab_size"], n).tolist(), 3]
        for n in (3, 7, 12)
    ]
    titles = [
        Seq2SeqDecoder(m, 3, 6, batch_size=4).beam_search_batch(
            sources, 2, nbest=True
        )
        for m in (model, loaded)
    ]
    assert titles[0] == titles[1]
    assert len({tuple(best[0][0]) for best in titles[0]}) > 1


def test_weights_file_of_one_loads_into_the_other(tmp_path):
    """`.weights.h5` files (the task scripts' best weights) keep loading."""
    model = tiny_model("unilm", seed=1)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    other = build_transformer_model(dict(TINY), application="unilm")
    randomize(other, seed=2)
    other.load_weights(path)
    np.testing.assert_array_equal(outputs(other), outputs(model))


# Export for serving -------------------------------------------------------

# Run in a fresh interpreter (`-I`, no PYTHONPATH, in the export's folder)
# where this project cannot be imported, even through an editable install:
# a serving process has TensorFlow and the export, nothing else of ours.
SERVING = """
import importlib.abc
import sys

PROJECT = {"models", "data", "weights", "tasks", "compat", "tests"}


class NoProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PROJECT:
            raise ImportError(f"{name} is not importable here")


sys.meta_path.insert(0, NoProject())
try:
    import models
except ImportError:
    pass
else:
    raise SystemExit("the project is importable")

import numpy as np
import tensorflow as tf

batch = np.load("batch.npz")
exported = tf.saved_model.load("exported")
serve = exported.signatures["serving_default"]
np.savez(
    "served.npz",
    serve=exported.serve([batch["token_ids"], batch["segment_ids"]]),
    signature=serve(
        Input_Token=tf.constant(batch["token_ids"]),
        Input_Segment=tf.constant(batch["segment_ids"]),
    )["output_0"],
)
"""


@pytest.mark.slow
def test_saved_model_export_serves_in_a_process_without_the_project(
    tmp_path,
):
    pytest.importorskip("tensorflow", reason="a SavedModel needs TensorFlow")
    model = tiny_model("unilm", keep_tokens=KEEP)
    model.export(tmp_path / "exported", format="tf_saved_model", verbose=False)
    token_ids, segment_ids = mixed_batch()
    np.savez(
        tmp_path / "batch.npz", token_ids=token_ids, segment_ids=segment_ids
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "KERAS_BACKEND")
    }
    result = subprocess.run(
        [sys.executable, "-I", "-c", SERVING],
        cwd=tmp_path,
        env=dict(environment, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = outputs(model)
    with np.load(tmp_path / "served.npz") as served:
        for name in ("serve", "signature"):
            assert served[name].shape == expected.shape
            np.testing.assert_allclose(
                served[name], expected, rtol=0, atol=1e-5
            )
