"""Model configurations and optimizers built from command-line options,
the same way for every script that trains."""

import keras

from models.bert import BertConfig
from tasks.lib.cli import fail


def shape_config(
    vocab_size: int,
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    dropout: float = 0.0,
) -> BertConfig:
    """The config of a randomly initialised model of this shape; a shape
    BertConfig refuses stops in one line naming the flags."""
    try:
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_positions,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
    except ValueError:
        fail(f"--hidden {hidden}: expected a multiple of --heads {heads}")


def make_optimizer(optimizer, precision: str):
    """`optimizer`, wrapped in loss scaling under fp16."""
    if precision == "fp16":
        # float16 gradients underflow without loss scaling.
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
