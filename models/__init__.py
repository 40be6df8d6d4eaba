"""Models: BERT/UniLM builder, layers, decoding and training strategies."""

from models.bert import BertConfig
from models.bert import BertNetwork
from models.bert import build_transformer_model

__all__ = ["BertConfig", "BertNetwork", "build_transformer_model"]
