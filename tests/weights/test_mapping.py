"""The two name tables cover every variable, one to one."""

import pytest

from tests.checkpoints import hf_masked_lm
from tests.checkpoints import hf_to_google_arrays
from tests.checkpoints import tiny_model
from weights import mapping


def test_every_keras_variable_has_its_own_google_name():
    model = tiny_model("unilm")
    names = [mapping.keras_to_google(w.path) for w in model.weights]
    assert None not in names
    assert len(set(names)) == len(names)
    assert "bert/encoder/layer_1/output/LayerNorm/beta" in names


def test_hf_names_agree_with_hugging_faces_own_conversion():
    hf = hf_masked_lm()
    expected = hf_to_google_arrays(hf)
    names = {
        name: mapping.hf_to_google(name)
        for name in hf.state_dict()
        if not name.startswith("cls.predictions.decoder.")
    }
    assert sorted(names.values()) == sorted(expected)
    for name, google in names.items():
        linear = name.endswith(".weight") and not (
            "embeddings." in name or "LayerNorm" in name
        )
        assert mapping.hf_is_transposed(google) == linear, name


@pytest.mark.parametrize(
    "name, google",
    [
        (
            "encoder.layer.1.attention.self.key.bias",
            "bert/encoder/layer_1/attention/self/key/bias",
        ),
        ("bert.embeddings.LayerNorm.gamma", "bert/embeddings/LayerNorm/gamma"),
        (
            "bert.encoder.layer.0.output.LayerNorm.beta",
            "bert/encoder/layer_0/output/LayerNorm/beta",
        ),
        ("cls.predictions.bias", "cls/predictions/output_bias"),
        ("bert.pooler.dense.weight", None),
        ("cls.seq_relationship.weight", None),
    ],
)
def test_hf_name_variants(name, google):
    assert mapping.hf_to_google(name) == google


@pytest.mark.parametrize(
    "name, slot",
    [
        ("bert/encoder/layer_0/output/dense/kernel/adam_m", True),
        ("bert/embeddings/word_embeddings/adam_v", True),
        ("global_step", True),
        ("bert/embeddings/word_embeddings", False),
        ("cls/predictions/output_bias", False),
    ],
)
def test_optimizer_slots(name, slot):
    assert mapping.is_optimizer_slot(name) is slot


def test_block_index_comes_from_the_name():
    path = "Transformer-11-FeedForward/output/bias"
    assert mapping.keras_to_google(path) == (
        "bert/encoder/layer_11/output/dense/bias"
    )
