"""bert4keras.models on Keras 3: `build_transformer_model` for BERT/UniLM
and T5.

The model is this toolkit's (`models.build_transformer_model`): BERT,
RoBERTa, RoFormer or NEZHA as an encoder, a UniLM seq2seq model or a
causal LM, with bert4keras's layer names, loading Google, Hugging Face or
Keras checkpoints; `model='mt5.1.1'` (or 't5.1.1', 't5') builds a T5 with
bert4keras's `.encoder`, `.decoder` and `.model` (`compat.t5`).
bert4keras's keyword arguments are translated; those with no counterpart
here raise an error naming what to do instead.
"""

import dataclasses

import keras

from compat import backend as compat_backend
from compat import layers as _layers
from compat._unsupported import module_getattr
from compat._unsupported import unsupported
from compat.backend import gelu_hidden_act
from compat.t5 import T5_MODELS
from compat.t5 import build_t5
from models import BertConfig
from models import build_transformer_model as _build_model
from models.config import resolve_config
from models.positions import MODEL_TYPES
from weights import load_checkpoint

__all__ = ["Model", "build_transformer_model"]

Model = keras.Model

MODELS = MODEL_TYPES

# bert4keras keyword -> the config field it sets.
_RENAMED = {
    "max_position": "max_position_embeddings",
    "segment_vocab_size": "type_vocab_size",
    "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
}

_BUILD_IT = (
    "build on model.outputs with Keras layers, or write the network with "
    "models.bert.BertNetwork"
)

# bert4keras options this builder has no counterpart for, with what to do;
# they may still be passed with their default (False or None).
_OPTIONS = {
    "with_pool": (
        "no pooler is built; take model.output[:, 0] and add "
        "keras.layers.Dense(hidden_size, activation='tanh')"
    ),
    "with_nsp": "no next-sentence head is built; " + _BUILD_IT,
    "compound_tokens": "extend the vocabulary with keep_tokens instead",
    "hierarchical_position": "long positions are not ported; " + _BUILD_IT,
    "custom_position_ids": "positions are 0..n-1; " + _BUILD_IT,
    "shared_segment_embeddings": _BUILD_IT,
    "residual_attention_scores": _BUILD_IT,
    "autoresize_weights": "resize arrays before loading them",
    "layers": _BUILD_IT,
    "prefix": _BUILD_IT,
    "attention_caches": (
        "models.decoding.Seq2SeqDecoder decodes with a key/value cache"
    ),
    "layer_norm_cond": "conditional LayerNorm is not ported; " + _BUILD_IT,
    "layer_norm_cond_hidden_size": "conditional LayerNorm is not ported",
    "layer_norm_cond_hidden_act": "conditional LayerNorm is not ported",
    "additional_input_layers": _BUILD_IT,
    "embedding_size": "sizes follow hidden_size; " + _BUILD_IT,
    "attention_head_size": "sizes follow num_attention_heads; " + _BUILD_IT,
    "attention_key_size": "sizes follow num_attention_heads; " + _BUILD_IT,
}


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    return_keras_model=True,
    **kwargs,
):
    """bert4keras's builder: `keras.Model` taking `[token_ids, segment_ids]`.

    `model` 'mt5.1.1', 't5.1.1' or 't5' (v1.0) builds a T5 instead
    (`compat.t5`): `.encoder`, `.decoder` and `.model` with
    `return_keras_model=False`.

    Args as bert4keras: `application` 'encoder', 'unilm' or 'lm';
    `keep_tokens`, `with_mlm` (True, 'softmax' or 'linear'),
    `ignore_invalid_weights`, `dropout_rate`, `max_position`, `name` and
    any `bert_config.json` field. `hidden_act: "gelu"` takes the form
    `compat.backend.set_gelu` chose. With `return_keras_model=False` the
    result is a `BuiltTransformer` (`.model`,
    `.load_weights_from_checkpoint`). Token and segment inputs are int32
    (Keras 2's were float32).
    """
    if not isinstance(model, str):
        raise unsupported(
            "build_transformer_model(model=<class>)",
            "bert4keras's model classes are not ported; " + _BUILD_IT,
        )
    model = model.lower()
    if model in T5_MODELS:
        built = build_t5(
            config_path,
            checkpoint_path,
            model,
            kwargs.pop("keep_tokens", None),
            kwargs.pop("name", None),
            dict(kwargs, application=application.lower()),
        )
        return built.model if return_keras_model else built
    if model not in MODELS:
        raise unsupported(
            f"build_transformer_model(model={model!r})",
            f"compat builds {', '.join(MODELS + tuple(T5_MODELS))} models "
            "only (GPT, ALBERT, RoFormer-v2... are not ported); "
            "keras_hub.models has several of them for Keras 3",
        )
    for option, hint in _OPTIONS.items():
        if kwargs.pop(option, None):
            raise unsupported(f"build_transformer_model({option}=...)", hint)
    strict = not kwargs.pop("ignore_invalid_weights", False)
    name = kwargs.pop("name", None)
    keep_tokens = kwargs.pop("keep_tokens", None)
    with_mlm = kwargs.pop("with_mlm", False)
    kwargs.pop("sequence_length", None)  # inputs of any length are taken
    config = resolve_config(config_path, _config_overrides(kwargs))
    config = dataclasses.replace(
        config, hidden_act=gelu_hidden_act(config.hidden_act)
    )
    built = _build_model(
        config,
        None,
        model=model,
        application=application.lower(),
        with_mlm=with_mlm,
        keep_tokens=keep_tokens,
        name=name,
    )
    # bert4keras's RECOMPUTE: every block recomputed in the backward pass.
    built.bert_network.gradient_checkpointing = compat_backend.do_recompute
    result = BuiltTransformer(built, keep_tokens, strict)
    if checkpoint_path is not None:
        result.load_weights_from_checkpoint(checkpoint_path)
    return built if return_keras_model else result


def _config_overrides(kwargs):
    """bert4keras keywords as config fields; unknown ones are an error."""
    fields = set(BertConfig.__dataclass_fields__)
    overrides = {}
    for key, value in kwargs.items():
        field = _RENAMED.get(key, key)
        if field not in fields:
            raise TypeError(
                f"build_transformer_model got an unknown argument {key!r}"
            )
        if value is not None:
            overrides[field] = value
    return overrides


class BuiltTransformer:
    """What `build_transformer_model(..., return_keras_model=False)` gives.

    bert4keras returns its model-building object there; scripts use its
    `.model` and `load_weights_from_checkpoint` (multi-GPU scripts build and
    compile under a distribution scope and load the checkpoint last).
    """

    def __init__(self, model, keep_tokens=None, strict=True):
        self.model = model
        self.keep_tokens = keep_tokens
        self.strict = strict

    @property
    def inputs(self):
        return self.model.inputs

    @property
    def outputs(self):
        return self.model.outputs

    @property
    def layers(self):
        """bert4keras's `{name: layer}` of the network."""
        return self.model.bert_network.layers

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        if mapping is not None:
            raise unsupported(
                "load_weights_from_checkpoint(mapping=...)",
                "checkpoint names are mapped by weights/mapping.py",
            )
        load_checkpoint(
            self.model,
            checkpoint,
            keep_tokens=self.keep_tokens,
            strict=self.strict,
        )

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        hint = _BUILD_IT
        if name == "save_weights_as_checkpoint":
            hint = "save with weights.save_safetensors(model, path)"
        raise unsupported(f"the bert4keras model object's .{name}", hint)


_CLASSES = "bert4keras's model classes are not ported; " + _BUILD_IT

__getattr__ = module_getattr(
    __name__,
    {
        **{
            name: _CLASSES
            for name in (
                "Transformer BERT ALBERT ALBERT_Unshared NEZHA RoFormer "
                "RoFormerV2 ELECTRA GPT GPT2 GPT2_ML T5_Base T5_Encoder "
                "T5_Decoder T5 LM_Mask UniLM_Mask"
            ).split()
        },
        "extend_with_language_model": "use application='lm'",
        "extend_with_unified_language_model": "use application='unilm'",
        "data_parallel": (
            "use keras.distribution.DataParallel (models/distribution.py)"
        ),
    },
    fallback=_layers,
)
