"""Data for Chinese BERT/UniLM seq2seq: vocab, tokenizer, pairs, batches.

Names follow bert4keras 0.11 (`Tokenizer`, `load_vocab`, `sequence_padding`)
so a ported script only changes its imports.
"""

import importlib

from data.datasets import DataFormatError
from data.datasets import PairsReport
from data.datasets import read_pairs
from data.datasets import read_pairs_with_report
from data.datasets import sha256_of
from data.datasets import split_pairs
from data.tokenizer import Tokenizer
from data.vocab import load_vocab
from data.vocab import save_vocab

# `data.batching` imports Keras, which starts a backend (seconds, and
# TensorFlow by default): load it on first use so that tokenizing and
# reading data stay plain Python.
_LAZY = {
    "EncoderDecoderBatches": "data.batching",
    "Seq2SeqBatches": "data.batching",
    "sequence_padding": "data.batching",
    "SpTokenizer": "data.sentencepiece",
}

__all__ = [
    "DataFormatError",
    "EncoderDecoderBatches",
    "PairsReport",
    "Seq2SeqBatches",
    "SpTokenizer",
    "Tokenizer",
    "load_vocab",
    "read_pairs",
    "read_pairs_with_report",
    "save_vocab",
    "sequence_padding",
    "sha256_of",
    "split_pairs",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")
