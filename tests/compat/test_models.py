"""compat.models.build_transformer_model: bert4keras's arguments, our model."""

import json
import math

import keras
import numpy as np
import pytest

from compat import UnsupportedError
from compat.backend import set_gelu
from compat.models import BuiltTransformer
from compat.models import build_transformer_model
from weights import save_safetensors

CONFIG = dict(
    vocab_size=30,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=20,
    hidden_act="gelu",
    max_position_embeddings=24,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    directionality="bidi",  # Google's configs carry keys nobody reads
)


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(CONFIG))
    return str(path)


def test_bert4keras_keywords_become_config_fields(config_path):
    model = build_transformer_model(
        config_path,
        application="UniLM",
        model="RoBERTa",
        dropout_rate=0.0,
        attention_dropout_rate=0.05,
        max_position=40,
        segment_vocab_size=3,
        keep_tokens=[0, 1, 2, 5, 7],
        sequence_length=None,
        name="seq2seq",
    )
    config = model.bert_config
    assert config.hidden_dropout_prob == 0.0
    assert config.attention_probs_dropout_prob == 0.05
    assert config.max_position_embeddings == 40
    assert config.type_vocab_size == 3 and config.vocab_size == 5
    assert model.name == "seq2seq"
    assert model.output.shape[-1] == 5  # unilm always has the MLM head
    assert model.get_layer("Embedding-Token") is not None


def test_with_mlm_linear_gives_logits(config_path):
    model = build_transformer_model(
        config_path, with_mlm="linear", num_hidden_layers=2
    )
    assert model.bert_config.num_hidden_layers == 2
    tokens = np.array([[2, 5, 6, 3]])
    logits = model.predict([tokens, np.zeros_like(tokens)], verbose=0)
    assert not np.allclose(logits.sum(-1), 1.0)


def test_checkpoint_loads_now_or_later(config_path, tmp_path):
    source = build_transformer_model(config_path, application="unilm")
    checkpoint = tmp_path / "model.safetensors"
    save_safetensors(source, checkpoint)
    keep = list(range(10))

    loaded = build_transformer_model(
        config_path, str(checkpoint), application="unilm", keep_tokens=keep
    )
    built = build_transformer_model(
        config_path,
        application="unilm",
        keep_tokens=keep,
        return_keras_model=False,
    )
    assert isinstance(built, BuiltTransformer)
    assert built.inputs == built.model.inputs
    assert "Embedding-Token" in built.layers
    built.load_weights_from_checkpoint(str(checkpoint))
    expected = source.get_layer("Embedding-Token").embeddings.numpy()[:10]
    for model in (loaded, built.model):
        np.testing.assert_array_equal(
            model.get_layer("Embedding-Token").embeddings.numpy(), expected
        )
    with pytest.raises(UnsupportedError, match="save_safetensors"):
        built.save_weights_as_checkpoint("x")


@pytest.mark.parametrize(
    "kwargs, hint",
    [
        (dict(model="gpt2"), "keras_hub"),
        (dict(model="albert"), "not ported"),
        (dict(with_pool=True), "Dense"),
        (dict(compound_tokens=[[1, 2]]), "keep_tokens"),
        (dict(layer_norm_cond=object()), "conditional LayerNorm"),
        (dict(embedding_size=8), "hidden_size"),
    ],
)
def test_unported_options_name_what_to_do(config_path, kwargs, hint):
    with pytest.raises(UnsupportedError, match=hint):
        build_transformer_model(config_path, **kwargs)


def test_default_valued_options_are_fine(config_path):
    model = build_transformer_model(
        config_path, with_pool=False, with_nsp=False, compound_tokens=None
    )
    assert model.bert_config.hidden_size == 16


def test_unknown_keyword_is_an_error(config_path):
    with pytest.raises(TypeError, match="nonsense"):
        build_transformer_model(config_path, nonsense=1)


# set_gelu: which GELU "gelu" means in models built afterwards -------------


@pytest.fixture
def gelu_reset():
    yield
    set_gelu("erf")


def erf_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def tanh_gelu(x):
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + np.tanh(inner))


def activations(model):
    """The feed-forward's and the MLM head's activations on a grid."""
    x = np.linspace(-4.0, 4.0, 81).astype("float32")
    feed_forward = model.get_layer("Transformer-0-FeedForward")
    return [
        keras.ops.convert_to_numpy(layer.activation(x))
        for layer in (feed_forward.inner_dense, model.get_layer("MLM-Dense"))
    ], x


@pytest.mark.parametrize(
    "version, hidden_act, form",
    [("erf", "gelu", erf_gelu), ("tanh", "gelu_new", tanh_gelu)],
)
def test_set_gelu_chooses_the_form_of_later_models(
    config_path, gelu_reset, version, hidden_act, form
):
    before = build_transformer_model(config_path, application="unilm")
    set_gelu(version.upper())  # bert4keras lowers the name too
    model = build_transformer_model(config_path, application="unilm")
    assert model.bert_config.hidden_act == hidden_act
    values, x = activations(model)
    for value in values:
        np.testing.assert_allclose(value, form(x), atol=1e-6)
    other = tanh_gelu if form is erf_gelu else erf_gelu
    assert np.abs(values[0] - other(x)).max() > 1e-4
    assert before.bert_config.hidden_act == "gelu"  # built before: erf
    kept = activations(before)[0][0]
    np.testing.assert_allclose(kept, erf_gelu(x), atol=1e-6)


def test_set_gelu_leaves_other_activations(tmp_path, gelu_reset):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(dict(CONFIG, hidden_act="relu")))
    set_gelu("tanh")
    assert build_transformer_model(str(path)).bert_config.hidden_act == "relu"


def test_set_gelu_rejects_other_versions():
    with pytest.raises(ValueError, match="erf or tanh"):
        set_gelu("sigmoid")


def test_roformer_as_in_bert4keras(config_path, tmp_path):
    """model='roformer' on a BERT-style bert_config.json: rotary
    positions, no Embedding-Position, and a checkpoint of that layout."""
    source = build_transformer_model(
        config_path, model="roformer", application="unilm"
    )
    for variable in source.weights:
        variable.assign(np.random.default_rng(0).normal(0, 0.2, variable.shape))
    save_safetensors(source, tmp_path / "roformer.safetensors")
    model = build_transformer_model(
        config_path,
        tmp_path / "roformer.safetensors",
        model="RoFormer",
        application="unilm",
    )
    assert model.bert_config.model_type == "roformer"
    names = [layer.name for layer in model.layers]
    assert "Embedding-Position" not in names
    token_ids = np.array([[2, 5, 6, 3, 7, 3]], "int32")
    segment_ids = np.array([[0, 0, 0, 0, 1, 1]], "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model([token_ids, segment_ids])),
        keras.ops.convert_to_numpy(source([token_ids, segment_ids])),
        atol=1e-6,
    )
    with pytest.raises(Exception, match="position_embeddings"):
        build_transformer_model(config_path, tmp_path / "roformer.safetensors")
