"""compat's mT5 (`model='mt5.1.1'`) against `MT5ForConditionalGeneration`.

A random tiny mT5 is written as a Google TF checkpoint (names from
`tests.checkpoints`, independent of `weights.t5_mapping`) beside a
bert4keras-style `t5_config.json` (bojone's keys: `hidden_size`,
`attention_head_size`, `hidden_act: ["gelu", "linear"]`...). The
`.encoder`, `.decoder` and `.model` that `build_transformer_model(...,
return_keras_model=False)` gives must equal Hugging Face's encoder
states and next-token probabilities to float32 round-off; `keep_tokens`
must give Hugging Face's probabilities over the kept tokens; the decoder's
output must carry bert4keras's mask (first position, then non-zero ids).
"""

import json

import keras
import numpy as np
import pytest

from compat import UnsupportedError
from compat.layers import Layer
from compat.models import build_transformer_model
from tests.checkpoints import TINY_T5
from tests.checkpoints import hf_mt5
from tests.checkpoints import hf_t5_to_google_arrays
from tests.checkpoints import write_tf_checkpoint

TOLERANCE = 1e-5
SOURCES = np.array([[5, 9, 3, 17, 8, 1], [12, 4, 1, 0, 0, 0]], "int32")
TARGETS = np.array([[0, 7, 21, 6, 1], [0, 30, 1, 0, 0]], "int32")
KEEP = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 17, 21, 30, 33, 39]


def bert4keras_config():
    """TINY_T5's shape under bert4keras's keys (and T5's bucket keys)."""
    return {
        "hidden_size": TINY_T5["d_model"],
        "intermediate_size": TINY_T5["d_ff"],
        "num_attention_heads": TINY_T5["num_heads"],
        "attention_head_size": TINY_T5["d_kv"],
        "num_hidden_layers": TINY_T5["num_layers"],
        "vocab_size": TINY_T5["vocab_size"],
        "hidden_act": ["gelu", "linear"],
        "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 20,
    }


@pytest.fixture(scope="module")
def hf_model():
    return hf_mt5(seed=3)


@pytest.fixture(scope="module")
def files(hf_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("mt5")
    config = root / "t5_config.json"
    config.write_text(json.dumps(bert4keras_config()))
    checkpoint = write_tf_checkpoint(
        hf_t5_to_google_arrays(hf_model), root / "model.ckpt-1000"
    )
    return str(config), str(checkpoint)


def build(files, **kwargs):
    return build_transformer_model(
        *files,
        model="mt5.1.1",
        return_keras_model=False,
        name="T5",
        **kwargs,
    )


def hf_run(hf_model, sources, targets):
    """Hugging Face's encoder states and next-token probabilities."""
    import torch

    ids = torch.tensor(sources, dtype=torch.long)
    mask = torch.tensor(sources != 0, dtype=torch.long)
    with torch.no_grad():
        out = hf_model(
            input_ids=ids,
            attention_mask=mask,
            decoder_input_ids=torch.tensor(targets, dtype=torch.long),
        )
    return out.encoder_last_hidden_state.numpy(), out.logits.numpy()


def softmax(x):
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def check(label, ours, theirs):
    diff = float(np.max(np.abs(ours - theirs)))
    scale = max(1.0, float(np.max(np.abs(theirs))))
    print(f"\n[{keras.backend.backend()}] {label}: max abs diff {diff:.2e}")
    assert diff < TOLERANCE * scale, f"{label}: {diff}"


def test_model_encoder_and_decoder_match_hf(hf_model, files):
    t5 = build(files)
    assert (t5.encoder.name, t5.decoder.name) == ("T5_Encoder", "T5_Decoder")
    encoded, logits = hf_run(hf_model, SOURCES, TARGETS)
    probas = t5.model.predict([SOURCES, TARGETS], verbose=0)
    check("model", probas, softmax(logits))
    ours = t5.encoder.predict(SOURCES, verbose=0)
    check("encoder", ours, encoded)
    # The decoder attends to every state it is given: one unpadded source.
    encoded, logits = hf_run(hf_model, SOURCES[:1], TARGETS[:1, :3])
    probas = t5.decoder.predict([encoded, TARGETS[:1, :3]], verbose=0)
    check("decoder", probas, softmax(logits))


def test_keep_tokens_gives_hf_probabilities_over_kept_tokens(hf_model, files):
    t5 = build(files, keep_tokens=KEEP)
    old = np.array(KEEP)
    new_sources = np.array([[5, 9, 3, 11, 8, 1], [10, 4, 1, 0, 0, 0]])
    new_targets = np.array([[0, 7, 12, 6, 1], [0, 13, 1, 0, 0]])
    _, logits = hf_run(hf_model, old[new_sources], old[new_targets])
    probas = t5.model.predict([new_sources, new_targets], verbose=0)
    assert probas.shape[-1] == len(KEEP)
    check("keep_tokens", probas, softmax(logits[..., old]))


class MaskOf(Layer):
    """The Keras mask of its second input, as floats."""

    def call(self, inputs, mask=None):
        return keras.ops.cast(mask[1], "float32")

    def compute_mask(self, inputs, mask=None):
        return None


def test_decoder_output_carries_bert4keras_mask(files):
    t5 = build(files)
    expected = [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    model = t5.model
    masks = keras.Model(
        model.inputs, MaskOf()([model.inputs[1], model.outputs[0]])
    )
    np.testing.assert_array_equal(
        masks.predict([SOURCES, TARGETS], verbose=0), expected
    )
    decoder = t5.decoder
    masks = keras.Model(
        decoder.inputs, MaskOf()([decoder.inputs[1], decoder.outputs[0]])
    )
    encoded = t5.encoder.predict(SOURCES, verbose=0)
    np.testing.assert_array_equal(
        masks.predict([encoded, TARGETS], verbose=0), expected
    )


def test_return_keras_model_gives_the_model(files):
    model = build_transformer_model(*files, model="mt5.1.1")
    assert isinstance(model, keras.Model)
    assert [x.name for x in model.inputs] == [
        "Encoder-Input-Token",
        "Decoder-Input-Token",
    ]


def test_t5_versions_tie_the_output_layer_as_bert4keras(files):
    config = files[0]
    for name, tied in (("t5", True), ("t5.1.1", False), ("mt5.1.1", False)):
        built = build_transformer_model(
            config, model=name, return_keras_model=False
        )
        assert built.t5.t5_config.tie_word_embeddings is tied
        assert ("Decoder-Output-LM" in built.layers) is not tied


def test_t5_as_unilm_is_refused(files):
    with pytest.raises(UnsupportedError, match="encoder-decoder"):
        build_transformer_model(files[0], model="mt5.1.1", application="unilm")


def test_t5_checkpoint_norm_names_load_as_mt5s(hf_model, files, tmp_path):
    """T5 v1.0 / v1.1 checkpoints name mT5's `rms_norm` `layer_norm`
    (`final_layer_norm` after a stack), as bert4keras's `t5.1.1` reads."""
    arrays = {}
    for name, array in hf_t5_to_google_arrays(hf_model).items():
        stack, _, rest = name.partition("/")
        if rest == "rms_norm/scale":
            name = f"{stack}/final_layer_norm/scale"
        arrays[name.replace("/rms_norm/", "/layer_norm/")] = array
    assert not any("rms_norm" in name for name in arrays)
    checkpoint = write_tf_checkpoint(arrays, tmp_path / "model.ckpt-1")
    t5 = build_transformer_model(
        files[0], str(checkpoint), model="t5.1.1", return_keras_model=False
    )
    expected = build(files).model.get_weights()
    for loaded, wanted in zip(t5.model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(loaded, wanted)
