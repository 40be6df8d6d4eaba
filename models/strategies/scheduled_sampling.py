"""Scheduled sampling (`scheduled`): a second pass that reads, with a
growing probability, the first pass's predictions instead of the gold."""

import dataclasses
import math
from typing import ClassVar

import keras
from keras import ops

from models import targets
from models.strategies.base import Baseline
from models.strategies.base import feed_previous
from models.strategies.options import check_choice
from models.strategies.options import check_rate
from models.targets import target_positions

SCHEDULES = ("linear", "exponential", "inverse_sigmoid", "constant")


def sampling_rate(
    step,
    schedule: str = "linear",
    *,
    c: float = 5e-5,
    epsilon_min: float = 0.5,
    decay: float = 0.9999,
    k: float = 1000.0,
    rate: float = 0.5,
    max_rate: float = 1.0,
):
    """p at optimizer step `step`: how often a prediction replaces the gold.

    Bengio et al. (2015) decay the teacher-forcing probability ε_i over
    steps i, and p = min(1 - ε_i, max_rate):

    - `linear`: ε_i = max(epsilon_min, 1 - c·i);
    - `exponential`: ε_i = decay^i (decay < 1);
    - `inverse_sigmoid`: ε_i = k / (k + exp(i / k)) (k >= 1);
    - `constant`: p = min(rate, max_rate) at every step.

    A pure function in `keras.ops`: `step` may be the optimizer's
    iteration counter inside a compiled step. The defaults reach
    p = 0.5 at step 10,000 (linear), p = 0.63 (exponential) and
    p = 0.5 at step k·ln k ≈ 6,900 (inverse sigmoid).
    """
    check_choice("schedule", schedule, SCHEDULES)
    i = ops.cast(step, "float32")
    if schedule == "constant":
        teacher = 1.0 - rate + 0.0 * i
    elif schedule == "linear":
        teacher = ops.maximum(epsilon_min, 1.0 - c * i)
    elif schedule == "exponential":
        # exp(i·ln k), not k ** i: the same in float32 without a pow op.
        teacher = ops.exp(i * math.log(decay))
    else:
        # exp overflows to inf for large i, giving ε = 0 as it should.
        teacher = k / (k + ops.exp(i / k))
    return ops.minimum(1.0 - teacher, max_rate)


def mixed_embeddings(layer, logits):
    """Σ_v softmax(logits)_v·E_v per slot, E the table of the token
    embedding `layer`, in the layer's compute dtype."""
    table = ops.cast(layer.embeddings, layer.compute_dtype)
    probas = ops.cast(ops.softmax(logits, axis=-1), table.dtype)
    return ops.matmul(probas, table)


@dataclasses.dataclass
class ScheduledSampling(Baseline):
    """Two-pass scheduled sampling for Transformers (Mihaylova & Martins,
    2019), with Bengio et al.'s (2015) schedules.

    A first, teacher-forced pass without gradient (and without dropout, as
    at decoding) predicts every target token. The second pass, trained on
    the gold labels, reads at each target position t, with probability
    p = `sampling_rate(step, schedule, ...)`, the first pass's prediction
    made at t - 1 instead of the gold token: its argmax
    (`mix='argmax'`), a token sampled from softmax(logits / temperature)
    (`mix='sample'`), or the embedding mix Σ_v softmax(logits /
    temperature)_v·E_v (`mix='soft'`; gradients reach E through the mix,
    not the first pass). Schedule parameters: `c`, `epsilon_min` (linear),
    `decay` (exponential), `k` (inverse sigmoid), `rate` (constant),
    `max_rate` (all). Logs `sampling_rate`, the current p.
    """

    name: ClassVar[str] = "scheduled"
    metric_names: ClassVar[tuple] = ("sampling_rate",)
    schedule: str = "linear"
    c: float = 5e-5
    epsilon_min: float = 0.5
    decay: float = 0.9999
    k: float = 1000.0
    rate: float = 0.5
    max_rate: float = 1.0
    mix: str = "argmax"
    temperature: float = 1.0

    def __post_init__(self):
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("mix", self.mix, ("argmax", "sample", "soft"))
        for name in ("epsilon_min", "rate", "max_rate"):
            check_rate(name, getattr(self, name))
        if self.c < 0:
            raise ValueError(f"c must not be negative, got {self.c}")
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")
        if self.k < 1.0:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(
                f"temperature must be positive, got {self.temperature}"
            )

    def rate_at(self, step):
        """p at `step` under this strategy's schedule."""
        return sampling_rate(
            step,
            self.schedule,
            c=self.c,
            epsilon_min=self.epsilon_min,
            decay=self.decay,
            k=self.k,
            rate=self.rate,
            max_rate=self.max_rate,
        )

    def second_pass_inputs(self, trainer, batch, chosen, seed_generator):
        """(token ids, token embeddings or None) the second pass reads.

        `chosen` marks the positions that read a prediction (made one
        position back) instead of the gold token; they are target
        positions, so the first pass runs the MLM head at the scored
        positions only (`trainer.target_logits`).
        """
        index = trainer.target_index(batch)
        logits, _, _ = trainer.target_logits(batch, training=False)
        logits = ops.stop_gradient(logits) / self.temperature
        if self.mix == "soft":
            layer = trainer.network["Embedding-Token"]
            mixed = targets.spread(mixed_embeddings(layer, logits), index)
            embedded = layer(batch.inputs)
            return batch.inputs, feed_previous(embedded, mixed, chosen)
        predicted = self.predicted_tokens(logits, seed_generator)
        predicted = targets.spread(predicted, index)
        return feed_previous(batch.inputs, predicted, chosen), None

    def predicted_tokens(self, logits, seed_generator):
        """int32 (batch, slots): the argmax of `logits` or a draw from
        their softmax (`mix='sample'`)."""
        if self.mix == "sample":
            flat = ops.reshape(logits, (-1, ops.shape(logits)[-1]))
            drawn = keras.random.categorical(flat, 1, seed=seed_generator)
            predicted = ops.reshape(drawn, ops.shape(logits)[:2])
        else:
            predicted = ops.argmax(logits, axis=-1)
        return ops.cast(predicted, "int32")

    def loss(self, trainer, batch):
        rate = self.rate_at(trainer.optimizer.iterations)
        coin = keras.random.uniform(
            ops.shape(batch.inputs), seed=trainer.seed_generator
        )
        chosen = ops.logical_and(
            target_positions(batch.inputs, batch.segment_ids), coin < rate
        )
        inputs, embeddings = self.second_pass_inputs(
            trainer, batch, chosen, trainer.seed_generator
        )
        cross_entropy = trainer.cross_entropy(
            batch._replace(inputs=inputs), token_embeddings=embeddings
        )
        return cross_entropy, {"sampling_rate": rate}
