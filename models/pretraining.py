"""Pretraining on the seq2seq trainer: MLM and UniLM in one train step.

`PretrainingTrainer` is `Seq2SeqTrainer` with labelled batches and one loss,
so that `fit()`/`train_on_batch`, the per-backend steps of
`models/backend.py`, mixed precision and checkpointing are the ones
fine-tuning uses. Batches come from `data.pretraining.PretrainingBatches`:
`((token_ids, segment_ids), labels)`, where `labels[i]` is what position i
must predict and `PAD_ID` (0, [PAD], never a target) marks "nothing". For
MLM the labels are the selected tokens, not shifted; for UniLM they are
the next target token, which makes `masked_cross_entropy` equal to the
trainer's `seq2seq_cross_entropy` (tested), so both objectives, and any
mix, share one compiled step.

`learning_rate` is the warm-up + decay schedule as a pure function;
`WarmupDecay` hands it to a Keras optimizer.
"""

import math

import keras
from keras import ops

from data.vocab import PAD_ID
from models.strategies.base import Batch
from models.targets import token_cross_entropy
from models.trainer import Seq2SeqTrainer

DECAYS = ("linear", "cosine")


def masked_cross_entropy(labels, logits):
    """Mean cross-entropy over the positions whose label is not `PAD_ID`
    (`token_cross_entropy`, the fine-tuning loss, on unshifted labels)."""
    return token_cross_entropy(labels, logits, ops.not_equal(labels, PAD_ID))


def unpack_labelled_batch(data):
    """`(token_ids, (segment_ids, labels))` from `((ids, segments), labels)`.

    The trainer's steps hand the second value on to `compute_losses`
    untouched, so the labels ride with the segment ids; the first stays
    the token ids, which the steps also read (the batch size).
    """
    inputs, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if (
        not isinstance(inputs, (tuple, list))
        or len(inputs) != 2
        or labels is None
        or sample_weight is not None
    ):
        raise ValueError(
            "PretrainingTrainer takes batches of "
            "((token_ids, segment_ids), labels)"
        )
    token_ids, segment_ids = inputs
    return token_ids, (segment_ids, labels)


class PretrainingTrainer(Seq2SeqTrainer):
    """Trains a UniLM model on MLM and/or UniLM batches with labels.

    Use `application='unilm'` models: MLM batches have segment ids all 0,
    which the UniLM mask turns into full bidirectional attention. In the
    trainer's `Batch`, `inputs` are the (masked) token ids the model reads
    and `token_ids` the labels; only the loss differs from fine-tuning.

    Args:
        model: a model from `build_transformer_model(application='unilm')`.
        seed: seeds the trainer's own random draws.
        max_predictions: run the MLM head on at most this many labelled
            positions per row instead of on all (BERT's
            `max_predictions_per_seq`): with a vocabulary of 13k rows the
            head is most of a small model's work. It must be at least the
            most labels of a row (`PretrainingBatches.max_labels`), or
            labels are dropped. None: every position.
    """

    def __init__(
        self,
        model,
        seed=None,
        max_predictions=None,
        gradient_checkpointing=None,
    ):
        super().__init__(
            model,
            strategy="baseline",
            seed=seed,
            gradient_checkpointing=gradient_checkpointing,
        )
        self.max_predictions = max_predictions

    unpack_batch = staticmethod(unpack_labelled_batch)

    def compute_losses(self, token_ids, segments_and_labels, training):
        """(cross-entropy at the labels, {}) of one batch."""
        segment_ids, labels = segments_and_labels
        batch = Batch(
            token_ids=ops.cast(labels, "int32"),
            segment_ids=ops.cast(segment_ids, "int32"),
            inputs=ops.cast(token_ids, "int32"),
        )
        return self.cross_entropy(batch, training=training), {}

    def head_at_targets(self, batch, hidden, index=None):
        """(logits, labels, mask) at the labelled positions, not shifted:
        every position, or at most `max_predictions` per row when set."""
        labels = batch.token_ids
        if self.max_predictions is not None:
            hidden, labels = gather_labelled(
                hidden, labels, self.max_predictions
            )
        logits = ops.cast(self.network.mlm_logits(hidden), "float32")
        return logits, labels, ops.not_equal(labels, PAD_ID)

    def target_loss(self, batch, logits):
        """Labels are given, not shifted: see `masked_cross_entropy`."""
        return masked_cross_entropy(batch.token_ids, logits)


def gather_labelled(hidden, labels, count):
    """`count` positions per row, the labelled ones among them.

    `top_k` of the label mask puts every labelled position in the first
    `count` (when there are no more), with a static shape that XLA and
    `jax.jit` accept; unlabelled ones that fill the rest keep the label
    `PAD_ID`.
    """
    count = min(count, ops.shape(labels)[1])
    labelled = ops.cast(ops.not_equal(labels, PAD_ID), "float32")
    _, positions = ops.top_k(labelled, k=count)
    picked = ops.take_along_axis(labels, positions, axis=1)
    return ops.take_along_axis(hidden, positions[..., None], axis=1), picked


def learning_rate(
    step,
    peak: float,
    warmup_steps: int,
    total_steps: int,
    decay: str = "linear",
    floor: float = 0.0,
):
    """Linear warm-up to `peak`, then linear or cosine decay to `floor`.

    Warm-up reaches `peak` at `warmup_steps` (and is not 0 at step 0, so
    no step is wasted); the decay ends at `total_steps` and stays at
    `floor` after. Written with `keras.ops`, it takes a Python number or
    the optimizer's step tensor alike.
    """
    _check_decay(decay)
    step = ops.cast(step, "float32")
    warm = peak * (step + 1.0) / (warmup_steps + 1.0)
    span = max(total_steps - warmup_steps, 1)
    progress = ops.clip((step - warmup_steps) / span, 0.0, 1.0)
    if decay == "linear":
        remaining = 1.0 - progress
    else:
        remaining = 0.5 * (1.0 + ops.cos(math.pi * progress))
    decayed = floor + (peak - floor) * remaining
    return ops.where(step < warmup_steps, warm, decayed)


def _check_decay(decay):
    if decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; expected one of {DECAYS}")


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate` as a Keras schedule (serialisable with its config)."""

    def __init__(
        self, peak, warmup_steps, total_steps, decay="linear", floor=0.0
    ):
        _check_decay(decay)  # now, not at the first step
        self.peak, self.warmup_steps = peak, warmup_steps
        self.total_steps, self.decay, self.floor = total_steps, decay, floor

    def __call__(self, step):
        return learning_rate(
            step,
            self.peak,
            self.warmup_steps,
            self.total_steps,
            self.decay,
            self.floor,
        )

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "floor": self.floor,
        }
