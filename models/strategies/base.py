"""What every strategy shares: the batch, the trainer it reads, the baseline.

- `Batch`: one training batch as a strategy sees it;
- `Trainer`: the part of `Seq2SeqTrainer` a strategy may use (a strategy
  is handed the trainer itself, but reads no more than this);
- `Baseline`: teacher forcing, the class every strategy extends;
- `feed_previous`: how a pass reads the outputs of the pass before it
  (`models.targets.target_positions` says where the target segment is).
"""

import contextlib
import dataclasses
from typing import ClassVar
from typing import NamedTuple
from typing import Protocol

import keras
from keras import ops

from models import targets
from models.bert import BertNetwork


class Batch(NamedTuple):
    """One training batch as strategies see it.

    `token_ids` are the labels and never change; `inputs` are what the
    model reads (equal to `token_ids` unless a strategy corrupted them).
    """

    token_ids: object
    segment_ids: object
    inputs: object


class Trainer(Protocol):
    """What `loss(trainer, batch)` and `build(trainer)` may read of the
    trainer (`Seq2SeqTrainer`); each entry names the strategies that use it.

    Passes and losses at the scored target positions (see
    `models/targets.py` for `gather`/`spread` between slots and positions):
    `cross_entropy` (one whole pass: baseline, replace, gp, scheduled,
    fgm, pgd), `target_logits` (a pass up to the MLM head at those
    positions: scheduled, vat, rdrop), `head_at_targets` on final hidden
    states a strategy computed itself (teaforn, professor), whose
    `label_loss` is the training loss, label smoothing included
    (teaforn, vat, rdrop, professor).
    """

    # The UniLM layers, callable with `token_embeddings=` or
    # `output='hidden'` (teaforn, scheduled, professor; its config in
    # professor's `build`).
    network: BertNetwork
    # Draws of the strategy's own random numbers (scheduled, vat,
    # professor; `prepare_batch` gets it as an argument).
    seed_generator: keras.random.SeedGenerator
    # Only `optimizer.iterations`, the step counter (scheduled, professor).
    optimizer: keras.optimizers.Optimizer
    # What `build` returned (professor's discriminator), or None.
    strategy_state: object

    @property
    def embeddings(self) -> keras.Variable:
        """The token-embedding matrix E, also the tied output projection
        (gp, fgm, pgd, vat)."""

    def cross_entropy(self, batch: Batch, token_embeddings=None):
        """Training cross-entropy of one pass over `batch.inputs`."""

    def target_logits(self, batch: Batch, training=True):
        """(logits, labels, mask) of one pass at the scored slots."""

    def target_index(self, batch: Batch) -> targets.TargetIndex:
        """The scored slots of `batch` (teaforn, scheduled)."""

    def head_at_targets(self, batch: Batch, hidden, index=None):
        """`target_logits` from final hidden states (batch, length, h)."""

    def label_loss(self, logits, labels, mask):
        """Training cross-entropy of `target_logits`' output."""

    def value_and_grad(self, fn, variable):
        """(fn(), d fn()/d variable), differentiable again (gp, fgm, pgd,
        vat)."""

    def overridden(self, variable, value) -> contextlib.AbstractContextManager:
        """Context in which `variable` reads as `value` (fgm, pgd, vat)."""

    def state_variables(self) -> list:
        """Every variable a loss may read (professor's branches and its
        discriminator's step)."""


def feed_previous(inputs, previous, target):
    """At target positions, replace the input with `previous` one step back.

    The output at position t - 1 is the model's guess of token t, so it is
    what decoding would have fed at t; the first target position gets the
    output of the source's closing [SEP]. `inputs`/`previous` are token ids
    (batch, length) or embeddings (batch, length, hidden).
    """
    shifted = ops.concatenate([previous[:, :1], previous[:, :-1]], axis=1)
    if len(ops.shape(inputs)) == 3:
        target = target[..., None]
    return ops.where(target, ops.cast(shifted, inputs.dtype), inputs)


@dataclasses.dataclass
class Baseline:
    """Teacher forcing: the model reads the true previous tokens."""

    name: ClassVar[str] = "baseline"
    metric_names: ClassVar[tuple] = ()

    def build(self, trainer: Trainer):
        """What this strategy trains itself, beside the model: None here."""
        return None

    def prepare_batch(self, token_ids, segment_ids, seed_generator):
        """The `(inputs, segment_ids)` the model reads: unchanged here."""
        return token_ids, segment_ids

    def loss(self, trainer: Trainer, batch: Batch):
        """`(objective, {figure: value})` of one batch."""
        return trainer.cross_entropy(batch), {}
