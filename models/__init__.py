"""Models: BERT/UniLM builder, layers, decoding and training strategies."""

import importlib

# Every name here imports Keras, which starts a backend (seconds, and
# TensorFlow by default): load them on first use, so that what needs no
# backend (`models.strategies.names` for the command line) stays fast.
_LAZY = {
    "AutoRegressiveDecoder": "models.decoding",
    "BertConfig": "models.config",
    "BertNetwork": "models.bert",
    "Seq2SeqDecoder": "models.decoding",
    "build_transformer_model": "models.bert",
}

__all__ = [
    "AutoRegressiveDecoder",
    "BertConfig",
    "BertNetwork",
    "Seq2SeqDecoder",
    "build_transformer_model",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
