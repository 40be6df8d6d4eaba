"""What the scripts build from their options, each in one place: a random
model's config from the shape flags, the optimizer in the run's precision,
and the fine-tuning learning-rate schedule.

Fine-tuning, pretraining and the benchmark build through these, so a
shape is checked, a loss scaled and a warm-up run the same way in all.
"""

import keras

from models.config import BertConfig
from tasks.lib.cli import check_at_least
from tasks.lib.cli import fail

# The sizes of a model: what `shape_config` sets (with dropout), and what a
# config file must give as positive integers.
SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def shape_config(
    vocab_size: int,
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    dropout: float = 0.0,
) -> BertConfig:
    """The config of a randomly initialised model given by --layers,
    --hidden, --heads and --intermediate; a shape `BertConfig` refuses
    stops in one line naming the flags."""
    check_at_least(
        {
            "--layers": (layers, 1),
            "--hidden": (hidden, 1),
            "--heads": (heads, 1),
            "--intermediate": (intermediate, 1),
        }
    )
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
        # BertConfig's one check: the heads split the width evenly.
        fail(f"--hidden {hidden}: expected a multiple of --heads {heads}")


def flags_config(args, vocab_size: int, max_positions: int, dropout: float):
    """`shape_config` of the flags `options.add_shape_options` adds."""
    return shape_config(
        vocab_size,
        args.layers,
        args.hidden,
        args.heads,
        args.intermediate,
        max_positions,
        dropout,
    )


def make_optimizer(
    optimizer: keras.optimizers.Optimizer, precision: str
) -> keras.optimizers.Optimizer:
    """`optimizer` as a run in `precision` ('bf16', 'fp16', 'fp32') needs
    it: float16 gradients underflow without loss scaling; bfloat16 has
    float32's range and needs none."""
    if precision == "fp16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def warmup_constant(lr: float, warmup_steps: int):
    """`lr`, reached by a linear warm-up from 0 over `warmup_steps` if any,
    then constant: the fine-tuning schedule.

    Keras's CosineDecay with `alpha=1` decays to 100% of its target, i.e.
    it stays constant after the warm-up. The rate depends only on the
    optimizer's step count, which is saved with every checkpoint, so a
    resumed run continues the schedule where it stopped.
    """
    if not warmup_steps:
        return lr
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=1,
        alpha=1.0,
        warmup_target=lr,
        warmup_steps=warmup_steps,
    )
