"""What the sequence-level strategies share (`scst`, `mrt`, `oracle`):
titles decoded inside the compiled step, their log-probabilities, their
rewards against the reference.

- `decode`: the batch with its title positions filled by the model's own
  tokens (greedy or sampled), or only some of them (`keep`), or forced to
  the reference's length: one in-graph loop of passes without gradient,
  as `models/professor.py`'s free run;
- `TitleIndex` / `title_index`: the title slots of a batch (the scored
  positions, `max_targets` per row) and each row's end token;
- `sequence_log_probs`: log p(title) of decoded titles, with gradient;
- `title_rewards`: `models/rewards.py`'s ROUGE-L or BLEU of decoded
  titles against the reference;
- `row_mean`, `repeat_rows`: means over the global batch's rows, and k
  copies of each row for k candidates.

A decoded title covers the reference title's positions (its final [SEP]
included), as the free run does: a sampled title ends at its first end
token, or is cut at the reference's length.
"""

from typing import NamedTuple

import keras
from keras import ops

from models import backend
from models import targets
from models.professor import pick_tokens
from models.professor import title_slots
from models.rewards import score


class TitleIndex(NamedTuple):
    """The title of each row at its scored slots, and its end token."""

    index: targets.TargetIndex  # `max_targets` slots per row
    end: object  # (batch,) int32: the token of the row's last title slot


def title_index(trainer, token_ids, segment_ids) -> TitleIndex:
    """The `TitleIndex` of `token_ids` (a reference or a decoded batch).

    The title has `trainer.max_targets` slots, or without it one per
    position but the last (the batch's length must then be static). The
    end token is read from the data, not configured: every title ends with
    [SEP], whatever its id in the vocabulary.
    """
    count = trainer.max_targets
    if count is None:
        # Every position but the last may be a title slot.
        length = ops.shape(token_ids)[1]
        count = None if length is None else int(length) - 1
    if count is None:
        raise ValueError(
            f"{trainer.strategy.name} scores whole titles on a static "
            "number of slots: give the trainer max_targets (e.g. "
            "Seq2SeqBatches.max_targets)"
        )
    index = targets.target_index(token_ids, segment_ids, count)
    count = ops.cast(ops.sum(index.mask, axis=-1), "int32")
    last = ops.maximum(count - 1, 0)[:, None]
    end = ops.take_along_axis(index.labels, last, axis=1)[:, 0]
    return TitleIndex(index, end)


def title_masks(tokens, mask, end):
    """(words, scored), (batch, slots) bool, of titles `tokens` at slots
    `mask`: `words` the title before its first end token (what is scored
    against the reference), `scored` those and the end token itself (what
    the model chose, whose log-probability counts)."""
    inside = ops.cast(mask, "bool")
    ended = ops.equal(tokens, end[:, None]) & inside
    before = ops.cumsum(ops.cast(ended, "int32"), axis=1) - ops.cast(
        ended, "int32"
    )
    scored = inside & ops.equal(before, 0)
    return scored & ~ended, scored


def title_rewards(name, decoded: TitleIndex, reference: TitleIndex):
    """(batch,) float32 reward `name` of each decoded title."""
    words, _ = title_masks(
        decoded.index.labels, decoded.index.mask, reference.end
    )
    ref_words, _ = title_masks(
        reference.index.labels, reference.index.mask, reference.end
    )
    return score(
        name, decoded.index.labels, words, reference.index.labels, ref_words
    )


def sequence_log_probs(trainer, token_ids, segment_ids, end):
    """(log p, rows): (batch,) float32 log-probability of each decoded
    title under the model (training pass, dropout and gradient), summed
    over its tokens up to its first end token; rows, 1.0 for a row that
    has a title (0.0 for padding rows)."""
    decoded = title_index(trainer, token_ids, segment_ids)
    hidden = trainer.network(
        token_ids, segment_ids, training=True, output="hidden"
    )
    index = decoded.index
    logits = trainer.network.mlm_logits(targets.gather(hidden, index))
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    labels, mask = index.labels, index.mask
    picked = ops.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    _, scored = title_masks(labels, mask, end)
    total = ops.sum(picked * ops.cast(scored, "float32"), axis=-1)
    rows = ops.cast(ops.sum(mask, axis=-1) > 0, "float32")
    return total, rows


def row_mean(values, rows):
    """Mean of per-row `values` over the rows marked 1 in `rows`, over the
    global batch also when replicas each hold a part of it."""
    count = backend.replica_sum(ops.sum(rows))
    total = backend.replica_sum(ops.sum(ops.cast(values, "float32") * rows))
    return total / ops.maximum(count, 1.0)


def repeat_rows(values, times: int):
    """Each row `times` times in a row: rows b·times ... b·times + times - 1
    are copies of row b."""
    return ops.repeat(values, times, axis=0)


def uniforms_like(token_ids, seed_generator):
    """(batch, length) uniforms in [0, 1), one per position, for `decode`."""
    return keras.random.uniform(ops.shape(token_ids), seed=seed_generator)


def decode(
    network,
    token_ids,
    segment_ids,
    uniforms=None,
    temperature: float = 1.0,
    keep=None,
    force_length: bool = False,
):
    """`token_ids` with title positions holding the model's own tokens.

    Position by position (one pass without dropout per title slot), each
    title position not in `keep` gets the model's token given everything
    before it as filled so far: the argmax (`uniforms` None or
    `temperature` 0) or a draw from softmax(logits / temperature) with the
    position's uniform (inverse CDF, which draws what the Gumbel-max trick
    argmax(logits / temperature + Gumbel noise) draws). Positions in
    `keep` (bool, (batch, length)) hold their reference token, which later
    positions read. `force_length`: never the end token before the row's
    last title position, always at it (titles as long as the reference).
    No gradient: the result is token ids.
    """
    token_ids = ops.cast(token_ids, "int32")
    slots = title_slots(token_ids, segment_ids)
    last = ops.max(slots, axis=1, keepdims=True)
    title = slots >= 0
    writable = title if keep is None else title & ~keep
    end = ops.max(ops.where(ops.equal(slots, last) & title, token_ids, 0), 1)
    if temperature == 0:
        uniforms = None

    def step(slot, inputs):
        hidden = network(inputs, segment_ids, training=False, output="hidden")
        here = ops.equal(slots, slot)
        target = ops.cast(ops.argmax(here, axis=1), "int32")[:, None]
        back = ops.maximum(target - 1, 0)
        reads = ops.take_along_axis(hidden, back[..., None], axis=1)
        logits = ops.cast(network.mlm_logits(reads)[:, 0], "float32")
        draws = None
        if uniforms is not None:
            logits = logits / temperature
            draws = ops.take_along_axis(uniforms, target, axis=1)[:, 0]
        if force_length:
            logits = forbid_end(logits, end, slot < last[:, 0])
        chosen = pick_tokens(logits, draws)
        if force_length:
            chosen = ops.where(slot == last[:, 0], end, chosen)
        return ops.where(here & writable, chosen[:, None], inputs)

    inputs = ops.fori_loop(0, ops.max(slots) + 1, step, token_ids)
    return ops.stop_gradient(inputs)


def forbid_end(logits, end, before_last):
    """`logits` with the end token's at -1e9 in the rows `before_last`."""
    is_end = ops.one_hot(end, ops.shape(logits)[-1], dtype="bool")
    return ops.where(is_end & before_last[:, None], -1e9, logits)
