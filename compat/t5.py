"""bert4keras's T5 object on Keras 3: `.encoder`, `.decoder`, `.model`.

`build_transformer_model(..., model='mt5.1.1', return_keras_model=False)`
gives a `BuiltT5`, whose three Keras models share one `models.t5.T5Model`'s
layers (and so its weights), as bert4keras's T5 shares them:

- `encoder`: source token ids -> encoded states (batch, length, d_model);
- `decoder`: [encoded states, decoder token ids] -> next-token
  probabilities at every decoder position; every encoded state is
  attended to (bert4keras's decoder input carries no padding mask);
- `model`: [source ids, decoder ids] -> the same probabilities, source
  padding (id 0) masked.

The probabilities carry bert4keras's decoder mask: the first position
(the start token, id 0) and every non-zero id after it, so a script's
loss can read `mask[1]` as bert4keras's mT5 example does.

bert4keras's T5 config keys (bojone's `t5_config.json`: `hidden_size`,
`intermediate_size`, `num_hidden_layers`, `attention_head_size`,
`hidden_act: ["gelu", "linear"]`...) are read as T5Config fields; a
Hugging Face `config.json` is read as it is. The feed-forward's GELU is
mT5's own (the tanh form, as Google's mesh TensorFlow and Hugging Face
compute it).
"""

import dataclasses
import json
import pathlib

import keras
from keras import ops

from compat._unsupported import unsupported
from models.t5 import T5Config
from models.t5 import build_t5_model

# bert4keras's T5 model names -> (model_type, tie_word_embeddings).
T5_MODELS = {
    "t5": ("t5", True),
    "t5.1.0": ("t5", True),
    "t5.1.1": ("t5", False),
    "mt5.1.1": ("mt5", False),
}

# bert4keras config key -> T5Config field.
_RENAMED = {
    "hidden_size": "d_model",
    "intermediate_size": "d_ff",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "attention_head_size": "d_kv",
    "hidden_dropout_prob": "dropout_rate",
}
# bert4keras config keys a T5 has no use for.
_IGNORED = {
    "initializer_range",
    "attention_probs_dropout_prob",
    "attention_dropout_rate",
    "max_position_embeddings",
    "max_position",
    "type_vocab_size",
    "segment_vocab_size",
    "sequence_length",
}


def t5_config(config_path, model, overrides):
    """A T5Config from a bert4keras or Hugging Face config file + keywords."""
    values = {}
    if config_path is not None:
        path = pathlib.Path(config_path)
        if path.is_dir():
            path = path / "config.json"
        values = json.loads(path.read_text(encoding="utf-8"))
    values.update(overrides)
    fields = {field.name for field in dataclasses.fields(T5Config)}
    config = {}
    for key, value in values.items():
        field = _RENAMED.get(key, key)
        if key == "hidden_act":
            config["feed_forward_proj"] = feed_forward_proj(value)
        elif field in fields:
            config[field] = value
        elif key not in _IGNORED and key in overrides:
            raise TypeError(
                f"build_transformer_model got an unknown argument {key!r}"
            )
    if "d_kv" not in config and "d_model" in config:
        config["d_kv"] = config["d_model"] // config.get("num_heads", 6)
    config["model_type"], config["tie_word_embeddings"] = T5_MODELS[model]
    return T5Config(**config)


def feed_forward_proj(hidden_act):
    """bert4keras's `hidden_act` as Hugging Face's `feed_forward_proj`.

    A pair `[act, "linear"]` is T5 v1.1's gated feed-forward."""
    if isinstance(hidden_act, (list, tuple)):
        if len(hidden_act) != 2 or hidden_act[1] != "linear":
            raise ValueError(
                f"hidden_act {hidden_act!r}: expected [act, 'linear'] for a "
                "gated feed-forward, or one activation"
            )
        return f"gated-{hidden_act[0]}"
    return hidden_act


def build_t5(config_path, checkpoint_path, model, keep_tokens, name, kwargs):
    """What `build_transformer_model(model='mt5.1.1', ...)` builds."""
    application = kwargs.pop("application", "encoder")
    if application != "encoder":
        raise unsupported(
            f"build_transformer_model(model={model!r}, "
            f"application={application!r})",
            "a T5 is an encoder-decoder already; use its .model",
        )
    kwargs.pop("ignore_invalid_weights", None)
    if "dropout_rate" in kwargs:
        kwargs["hidden_dropout_prob"] = kwargs.pop("dropout_rate")
    config = t5_config(config_path, model, kwargs)
    t5 = build_t5_model(
        config, checkpoint_path, keep_tokens=keep_tokens, name=name
    )
    return BuiltT5(t5, name or "T5")


class DecoderMask(keras.layers.Layer):
    """Passes the probabilities on with bert4keras's decoder mask.

    Inputs `[probas, decoder_token_ids]`; the mask is True at the first
    position and wherever the id is not 0 (bert4keras's `Embedding` keeps
    the first token, T5's start token 0, unmasked).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs[0]

    def compute_mask(self, inputs, mask=None):
        token_ids = inputs[1]
        rest = ops.not_equal(token_ids[:, 1:], 0)
        first = ops.ones_like(token_ids[:, :1], dtype="bool")
        return ops.concatenate([first, rest], axis=1)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, inputs[0].dtype)


class BuiltT5:
    """bert4keras's T5 object: `.encoder`, `.decoder`, `.model`.

    `t5` is the underlying `models.t5.T5Model` (its `t5_network` runs the
    cached `models.t5_decoding.T5Decoder`).
    """

    def __init__(self, t5, name):
        self.t5 = t5
        network = t5.t5_network
        self.encoder = self._encoder(network, f"{name}_Encoder")
        self.decoder = self._decoder(network, f"{name}_Decoder")
        source, target = t5.inputs
        masked = DecoderMask(name="Decoder-Output-Mask")
        self.model = keras.Model(
            t5.inputs, masked([t5.outputs[0], target]), name=name
        )

    @staticmethod
    def _encoder(network, name):
        source = keras.Input((None,), dtype="int32", name="Encoder-Input-Token")
        return keras.Model(source, network.encode(source), name=name)

    @staticmethod
    def _decoder(network, name):
        context = keras.Input(
            (None, network.config.d_model), name="Input-Context"
        )
        target = keras.Input((None,), dtype="int32", name="Decoder-Input-Token")
        # No source ids here: every encoded state is a real token.
        everything = ops.ones_like(context[:, :, 0], dtype="int32")
        hidden = network.decode(target, context, everything)
        logits = ops.cast(network.lm_logits(hidden), "float32")
        probas = network["LM-Activation"](logits)
        masked = DecoderMask(name="Decoder-Output-Mask")
        return keras.Model(
            [context, target], masked([probas, target]), name=name
        )

    @property
    def inputs(self):
        return self.model.inputs

    @property
    def outputs(self):
        return self.model.outputs

    @property
    def layers(self):
        """bert4keras's `{name: layer}` of the network."""
        return self.t5.t5_network.layers

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        if mapping is not None:
            raise unsupported(
                "load_weights_from_checkpoint(mapping=...)",
                "checkpoint names are mapped by weights/t5_mapping.py",
            )
        from weights.t5_mapping import load_t5_checkpoint

        load_t5_checkpoint(self.t5, checkpoint, self.t5.keep_tokens)
