"""Random replacement of target inputs (`replace`)."""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

from data.vocab import PAD_ID
from models.strategies.base import Baseline
from models.strategies.options import check_rate
from models.targets import target_positions


def draw_from_pool(token_ids, pool, seed_generator):
    """For every position, a token drawn uniformly from its row's pool.

    Sorting puts each row's pool positions first (in order); a uniform
    index below the row's pool size then picks one. No Python loop over
    tokens, and the same ops run eagerly, in `tf.function` and in `jax.jit`.
    """
    length = ops.shape(token_ids)[1]
    positions = ops.arange(length, dtype="int32")[None, :]
    order = ops.argsort(ops.where(pool, positions, positions + length), axis=-1)
    size = ops.sum(ops.cast(pool, "int32"), axis=-1, keepdims=True)
    uniform = keras.random.uniform(ops.shape(token_ids), seed=seed_generator)
    index = ops.cast(uniform * ops.cast(size, "float32"), "int32")
    index = ops.clip(index, 0, ops.maximum(size - 1, 0))
    source = ops.take_along_axis(order, index, axis=-1)
    return ops.take_along_axis(token_ids, source, axis=-1)


@dataclasses.dataclass
class Replace(Baseline):
    """Random replacement of target inputs (bojone/exposure_bias).

    Each sample is corrupted with probability `sample_rate`; in a corrupted
    sample each target-segment input token is replaced with probability
    `token_rate` by a token drawn uniformly from the sample itself: all its
    non-padding tokens, source and target, [CLS]/[SEP] included
    (`pool='sequence'`, as `random_replacement.py` does), or its target
    tokens only (`pool='target'`). The final [SEP] is eligible, as in the
    released code; being the last input it is seen by no scored position,
    so replacing it leaves the loss unchanged. A draw may return the
    original token. Labels stay the original tokens.
    """

    name: ClassVar[str] = "replace"
    sample_rate: float = 0.5
    token_rate: float = 0.3
    pool: str = "sequence"

    def __post_init__(self):
        check_rate("sample_rate", self.sample_rate)
        check_rate("token_rate", self.token_rate)
        if self.pool not in ("sequence", "target"):
            raise ValueError(
                f"pool must be 'sequence' or 'target', got {self.pool!r}"
            )

    def chosen(self, token_ids, segment_ids, seed_generator):
        """Boolean (batch, length): which input tokens get replaced."""
        batch = ops.shape(token_ids)[0]
        sample = keras.random.uniform((batch, 1), seed=seed_generator)
        token = keras.random.uniform(ops.shape(token_ids), seed=seed_generator)
        return ops.logical_and(
            target_positions(token_ids, segment_ids),
            ops.logical_and(sample < self.sample_rate, token < self.token_rate),
        )

    def prepare_batch(self, token_ids, segment_ids, seed_generator):
        if self.pool == "target":
            pool = target_positions(token_ids, segment_ids)
        else:
            pool = ops.not_equal(token_ids, PAD_ID)
        chosen = self.chosen(token_ids, segment_ids, seed_generator)
        drawn = draw_from_pool(token_ids, pool, seed_generator)
        return ops.where(chosen, drawn, token_ids), segment_ids
