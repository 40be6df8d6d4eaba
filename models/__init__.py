"""Models: BERT/UniLM builder, layers, decoding and training strategies."""

from models.bert import BertConfig
from models.bert import BertNetwork
from models.bert import build_transformer_model
from models.decoding import AutoRegressiveDecoder
from models.decoding import Seq2SeqDecoder

__all__ = [
    "AutoRegressiveDecoder",
    "BertConfig",
    "BertNetwork",
    "Seq2SeqDecoder",
    "build_transformer_model",
]
