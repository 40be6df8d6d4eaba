"""Where the seq2seq loss reads the model: the scored positions only.

The UniLM loss scores the prediction made at position t against the token
at t + 1, for target-segment labels only (`segment_ids[:, 1:]`). In a CSL
batch that is about one position in eight, yet projecting every position
onto a vocabulary of 13-21k rows is 10-15% of a BERT-base step and about
half of a small model's. A `TargetIndex` names the scored positions with a
static shape, `count` slots per row (unused slots masked), so the MLM head
and the cross-entropy run on those rows alone, in `tf.function`, XLA and
`jax.jit` alike:

    index = target_index(token_ids, segment_ids, count=33)
    logits = network.mlm_logits(gather(hidden, index))  # (batch, 33, vocab)
    loss = token_cross_entropy(index.labels, logits, index.mask)

`count=None` keeps every position (the full head): the same contract, so
the two paths are compared by one parity test.
"""

from typing import NamedTuple

from keras import ops

from data.vocab import PAD_ID
from models.losses import token_mean


class TargetIndex(NamedTuple):
    """The scored positions of a batch, `count` slots per row.

    Targets come first in each row, in position order; the slots after a
    row's last target point at position 0 with mask 0.
    """

    positions: object  # (batch, count) int32: the position that predicts
    labels: object  # (batch, count) int32: the token it must predict
    mask: object  # (batch, count) float32: 1 for a scored slot
    slots: object  # (batch, length) int32: slot of each predicting position
    full: bool = False  # every position, in order (`count=None`)


def target_index(token_ids, segment_ids, count=None):
    """The `TargetIndex` of `seq2seq_cross_entropy`'s scored positions.

    Position p is scored when `segment_ids[:, p + 1]` is 1; its label is
    `token_ids[:, p + 1]`. With `count`, each row keeps its first `count`
    scored positions: a row with more loses the rest, so `count` must be
    at least the most target tokens of a row (final [SEP] included), e.g.
    `Seq2SeqBatches.max_targets`. `count=None` keeps every position.
    """
    token_ids = ops.cast(token_ids, "int32")
    labels = token_ids[:, 1:]
    scored = ops.equal(ops.cast(segment_ids[:, 1:], "int32"), 1)
    if count is None:
        positions = ops.zeros_like(labels) + ops.arange(
            ops.shape(labels)[1], dtype="int32"
        )
        slots = ops.pad(positions, ((0, 0), (0, 1)))
        mask = ops.cast(scored, "float32")
        return TargetIndex(positions, labels, mask, slots, full=True)
    # `count` zero columns at the end: top_k needs at least `count`
    # candidates, also in batches shorter than `count`.
    batch = ops.shape(labels)[0]
    labels = ops.concatenate([labels, ops.zeros((batch, count), "int32")], 1)
    scored = ops.concatenate([scored, ops.zeros((batch, count), "bool")], 1)
    span = ops.shape(labels)[1]
    place = ops.arange(span, dtype="int32")[None, :]
    # Unique keys, scored first, each group in position order: the slots
    # do not depend on how top_k orders ties.
    key = ops.where(scored, -place, -place - span)
    _, order = ops.top_k(key, k=count)
    order = ops.cast(order, "int32")
    mask = ops.take_along_axis(scored, order, axis=1)
    picked = ops.take_along_axis(labels, order, axis=1)
    positions = ops.where(mask, order, 0)
    slots = ops.cumsum(ops.cast(scored, "int32"), axis=1) - 1
    slots = ops.clip(slots[:, : ops.shape(token_ids)[1]], 0, count - 1)
    return TargetIndex(positions, picked, ops.cast(mask, "float32"), slots)


def gather(values, index):
    """`values` (batch, length, ...) at the scored positions:
    (batch, count, ...)."""
    if index.full:
        return values[:, :-1]
    if len(ops.shape(values)) == 3:
        # A one-hot product, not a gather: exact, and its derivatives are
        # products too, where a gather's are scatters (gp differentiates
        # this twice).
        picks = ops.one_hot(
            index.positions, ops.shape(values)[1], dtype=values.dtype
        )
        return ops.einsum("bkl,blh->bkh", picks, values)
    return ops.take_along_axis(values, index.positions, axis=1)


def spread(values, index):
    """The inverse of `gather`: (batch, count, ...) slots back to
    (batch, length, ...), each predicting position holding its slot's
    value. Other positions hold some slot's value: mask them."""
    if index.full:
        return ops.concatenate([values, values[:, -1:]], axis=1)
    if len(ops.shape(values)) == 3:
        picks = ops.one_hot(
            index.slots, ops.shape(values)[1], dtype=values.dtype
        )
        return ops.einsum("blk,bkh->blh", picks, values)
    return ops.take_along_axis(values, index.slots, axis=1)


def token_cross_entropy(labels, logits, weights, label_smoothing=0.0):
    """Cross-entropy of `labels` under `logits`, averaged over the tokens
    that `weights` (0 or 1, the shape of `labels`) selects.

    The one loss of every trainer. Computed from float32 logits
    (log-softmax, not log of a softmax), so that it neither underflows in
    bf16/fp16 nor loses its second derivative. The mean is over the
    global batch's tokens, also when replicas each hold a part of it.

    `label_smoothing` ε scores the target (1 - ε)·onehot + ε/V over the V
    logits (Keras's and Szegedy et al.'s convention):
    (1 - ε)·(-log p_y) + ε·mean_v(-log p_v).
    """
    labels = ops.cast(labels, "int32")
    logits = ops.cast(logits, "float32")
    log_normaliser = ops.logsumexp(logits, axis=-1)
    picked = ops.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    nll = log_normaliser - picked
    if label_smoothing:
        uniform = log_normaliser - ops.mean(logits, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    return token_mean(nll, weights)


def target_positions(token_ids, segment_ids):
    """Target-segment tokens (segment 1, not padding), final [SEP] included."""
    return ops.logical_and(
        ops.equal(segment_ids, 1), ops.not_equal(token_ids, PAD_ID)
    )
