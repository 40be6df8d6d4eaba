"""Seq2seq training of a UniLM model under a pluggable strategy.

`Seq2SeqTrainer` wraps the user's UniLM model (it stays `trainer.model`, and
`trainer.save_weights` saves exactly its weights) and trains it with plain
`fit()`. The loss is bert4keras's `task_seq2seq_autotitle_csl.py`
cross-entropy: the prediction at position t is scored against the token at
t + 1, over target-segment tokens only (the final [SEP] included), averaged
over all such tokens of the batch. What a strategy changes (corrupted
inputs, extra loss terms) lives in `models/strategies/`; the per-backend
steps live in `models/backend.py`.

    trainer = Seq2SeqTrainer(
        model, strategy="gp", epsilon=1.0, max_targets=batches.max_targets
    )
    trainer.compile(optimizer=keras.optimizers.Adam(1e-5))
    history = trainer.fit(batches, epochs=20)   # logs: loss, gp

With `max_targets` the MLM head and the loss run at the scored positions
only (`models/targets.py`); without it, at every position.

Metrics: `loss` is the objective the strategy minimises (for `baseline`
and `replace` the target cross-entropy; for `gp` cross-entropy + `gp`),
plus each strategy's own figures. `evaluate()` reports `loss` as the plain
cross-entropy on clean inputs for every strategy, so validation losses
compare across strategies.

Two options hold for every strategy. `label_smoothing=ε` smooths the
training cross-entropies (each term and figure of the objective that is a
cross-entropy) towards the uniform distribution; `evaluate()` stays plain.
An optimizer created with `use_ema=True, ema_momentum=DECAY` keeps an
exponential moving average of the weights: `fit()` leaves the training
weights in the model (Keras's own `fit()` ends by writing the averages in,
so that a second `fit()` would train on from them), and
`with trainer.averaged_weights():` evaluates or saves with the averages.
"""

import contextlib

import keras
from keras import ops

from models import backend
from models import targets
from models.bert import BertNetwork
from models.strategies import registry
from models.strategies.base import Batch
from models.targets import token_cross_entropy

TARGET_HEADS = ("gathered", "full")


def seq2seq_cross_entropy(token_ids, segment_ids, logits):
    """Mean cross-entropy over target tokens, shifted by one position.

    Equals bert4keras's `sum(ce(y_true, probas[:, :-1]) * mask) / sum(mask)`
    with `y_true = token_ids[:, 1:]`, `mask = segment_ids[:, 1:]`.
    """
    return token_cross_entropy(
        token_ids[:, 1:], logits[:, :-1], segment_ids[:, 1:]
    )


def unpack_batch(data):
    """(token_ids, segment_ids) from the shapes `fit()` may hand over.

    Accepts `(token_ids, segment_ids)`, `((token_ids, segment_ids),)` and
    bert4keras generators' `([token_ids, segment_ids], None)`.
    """
    return unpack_pair(
        data, "Seq2SeqTrainer", "(token_ids, segment_ids)", "token ids"
    )


def unpack_pair(data, trainer, pair, labels):
    """The two arrays of a `pair` batch, also wrapped as `(pair,)` or
    `(pair, None)`; `trainer`, `pair` and `labels` name them in errors
    (a trainer's labels come from its inputs, so a label is refused)."""
    if (
        isinstance(data, (tuple, list))
        and len(data) in (1, 2)
        and isinstance(data[0], (tuple, list))
    ):
        if len(data) == 2 and data[1] is not None:
            raise ValueError(
                f"{trainer} takes no targets: the labels are the "
                f"{labels} themselves"
            )
        data = data[0]
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"expected batches of {pair}, got {type(data).__name__}"
        )
    return data[0], data[1]


class Seq2SeqTrainer(backend.Steps, keras.Model):
    """Trains a UniLM model with `fit()` under an exposure-bias strategy.

    Args:
        model: a model from `build_transformer_model(application='unilm')`.
        strategy: a name from `models.strategies.STRATEGIES` or a
            strategy object.
        seed: seeds the trainer's own random draws (input corruption);
            dropout keeps the model's seeds.
        label_smoothing: ε in [0, 1) for the training cross-entropy.
        max_targets: the most target tokens (final [SEP] included) of a
            row in any batch this trainer will see, e.g.
            `Seq2SeqBatches.max_targets`. The MLM head and the loss then
            run on that many positions per row instead of every position
            (`models/targets.py`); `fit` and `evaluate` refuse batches
            that say they hold longer targets. None: every position.
        target_head: 'gathered' (the head at the scored positions only)
            or 'full' (every position, then the scored ones picked: the
            reference the gathered head is tested and timed against).
        gradient_checkpointing: recompute each Transformer block's
            activations in the backward pass (`models.remat`): less
            memory, about one more forward pass of compute, the same
            gradients. None: as the model was built.
        **options: options of the named strategy (e.g. `epsilon=1.0`).
    """

    def __init__(
        self,
        model,
        strategy="baseline",
        seed=None,
        label_smoothing=0.0,
        max_targets=None,
        target_head="gathered",
        gradient_checkpointing=None,
        **options,
    ):
        backend.check_supported()
        super().__init__(name=f"{model.name}_trainer")
        if target_head not in TARGET_HEADS:
            raise ValueError(
                f"target_head must be one of {TARGET_HEADS}, got "
                f"{target_head!r}"
            )
        if max_targets is not None and (
            isinstance(max_targets, bool)
            or int(max_targets) != max_targets
            or max_targets < 1
        ):
            raise ValueError(
                f"max_targets must be a positive integer, got {max_targets!r}"
            )
        self.max_targets = None if max_targets is None else int(max_targets)
        self.target_head = target_head
        if isinstance(strategy, str):
            strategy = registry.get(strategy, **options)
        elif options:
            raise TypeError("options are for a strategy given by name")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1), got {label_smoothing}"
            )
        self.label_smoothing = float(label_smoothing)
        self.model = model
        self.network = self.find_network(model)
        if gradient_checkpointing is not None:
            self.network.gradient_checkpointing = bool(gradient_checkpointing)
        if getattr(self.network, "gradient_checkpointing", False):
            if not hasattr(self.network, "training_block"):
                raise ValueError(
                    "gradient checkpointing is built for the BERT family, "
                    f"not {type(self.network).__name__}"
                )
            backend.check_checkpointing(strategy)
        self.strategy = strategy
        self.seed_generator = keras.random.SeedGenerator(seed)
        # What the strategy trains itself, with its own optimizer (the
        # professor's discriminator), or None: see `strategy_variables`.
        self.strategy_state = strategy.build(self)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.figure_trackers = [
            keras.metrics.Mean(name=name) for name in strategy.metric_names
        ]
        # The wrapped model is built; saying so spares fit() a symbolic
        # build, which would misread `(token_ids, segment_ids)` as (x, y).
        self.built = True

    @staticmethod
    def find_network(model):
        """The network strategies run (a subclass trains another family)."""
        return BertNetwork.from_model(model)

    @property
    def metrics(self):
        return [self.loss_tracker, *self.figure_trackers]

    @property
    def embeddings(self):
        """The token-embedding matrix E (also the tied output projection)."""
        return self.network["Embedding-Token"].embeddings

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    unpack_batch = staticmethod(unpack_batch)

    def compute_losses(self, token_ids, segment_ids, training):
        """(objective, {figure: value}) of one batch, backend-agnostic."""
        token_ids = ops.cast(token_ids, "int32")
        segment_ids = ops.cast(segment_ids, "int32")
        if not training:
            # Plain cross-entropy, label smoothing or not: comparable.
            batch = Batch(token_ids, segment_ids, token_ids)
            logits, labels, mask = self.target_logits(batch, training=False)
            return token_cross_entropy(labels, logits, mask), {}
        inputs, segment_ids = self.strategy.prepare_batch(
            token_ids, segment_ids, self.seed_generator
        )
        return self.strategy.loss(self, Batch(token_ids, segment_ids, inputs))

    def cross_entropy(self, batch, token_embeddings=None, training=True):
        """Training cross-entropy (label smoothing applied) of one forward
        pass over `batch.inputs`, at the scored positions."""
        return self.label_loss(
            *self.target_logits(
                batch, training=training, token_embeddings=token_embeddings
            )
        )

    def target_logits(self, batch, training=True, token_embeddings=None):
        """(logits, labels, mask) of one forward pass at the scored slots.

        float32 logits (batch, slots, vocab), int32 labels and float32
        mask (batch, slots): `label_loss(logits, labels, mask)` is the
        batch's training loss. Slots are the positions `target_index`
        names, with the gathered head; every position but the last with
        the full head. Losses over target distributions (KL terms) use
        these, and need not know how positions are laid out.
        """
        hidden = self.network(
            batch.inputs,
            batch.segment_ids,
            token_embeddings=token_embeddings,
            training=training,
            output="hidden",
        )
        return self.head_at_targets(batch, hidden)

    def target_index(self, batch):
        """The batch's `targets.TargetIndex` under this trainer's head."""
        count = self.max_targets if self.target_head == "gathered" else None
        return targets.target_index(batch.token_ids, batch.segment_ids, count)

    def head_at_targets(self, batch, hidden, index=None):
        """`target_logits` from final hidden states (batch, length, h)
        that a strategy computed itself; `index` defaults to the batch's."""
        index = self.target_index(batch) if index is None else index
        logits = self.network.mlm_logits(targets.gather(hidden, index))
        return ops.cast(logits, "float32"), index.labels, index.mask

    def target_loss(self, batch, logits):
        """Training cross-entropy of full-length `logits` (the network's
        output) against the batch's labels, shifted by one position."""
        return self.label_loss(
            logits[:, :-1], batch.token_ids[:, 1:], batch.segment_ids[:, 1:]
        )

    def label_loss(self, logits, labels, mask):
        """Training cross-entropy of `target_logits`' output (label
        smoothing applied)."""
        return token_cross_entropy(labels, logits, mask, self.label_smoothing)

    def strategy_variables(self):
        """The variables of what the strategy trains itself (weights, then
        its optimizer's), which a checkpoint must save beside the model's
        weights and the optimizer; [] for most strategies."""
        if self.strategy_state is None:
            return []
        return self.strategy_state.state_variables()

    def state_variables(self):
        """Every variable a loss may read: weights, seeds, optimizer."""
        optimizer = getattr(self, "optimizer", None)
        extra = list(optimizer.variables) if optimizer is not None else []
        return [*self.variables, *extra]

    def value_and_grad(self, fn, variable):
        """(fn(), d fn()/d variable), differentiable again: see backend."""
        return backend.value_and_grad(fn, variable, self.state_variables())

    def overridden(self, variable, value):
        """Context in which `variable` reads as `value`: see backend."""
        return backend.overridden(variable, value, self.state_variables())

    def update_metrics(self, total, figures, batch_size):
        """Epoch means weighted by batch size, as Keras's own loss tracker.

        A figure given as `(value, measured)`, `measured` 0 or 1 at run
        time, counts only in the steps that measured it (professor's
        discriminator figures with `every` > 1).
        """
        self.loss_tracker.update_state(total, sample_weight=batch_size)
        for tracker in self.figure_trackers:
            if tracker.name in figures:
                value, weight = figures[tracker.name], batch_size
                if isinstance(value, tuple):
                    value, measured = value
                    weight = ops.cast(weight, "float32") * measured
                tracker.update_state(value, sample_weight=weight)
        # Only what this step measured: evaluate() reports no stale `gp`.
        return {
            metric.name: metric.result()
            for metric in self.metrics
            if metric is self.loss_tracker or metric.name in figures
        }

    @property
    def uses_ema(self):
        """Whether the optimizer averages the weights (`use_ema=True`)."""
        optimizer = getattr(self, "optimizer", None)
        return bool(getattr(optimizer, "use_ema", False))

    def fit(self, x=None, *args, validation_data=None, **kwargs):
        """`keras.Model.fit`, refusing batches with more targets than the
        head reads; with an averaging optimizer the model keeps its
        training weights afterwards (see the module docstring)."""
        self.check_targets(x)
        self.check_targets(validation_data)
        kwargs["validation_data"] = validation_data
        if not self.uses_ema:
            return super().fit(x, *args, **kwargs)
        keeper = TrainingWeights()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), keeper]
        history = super().fit(x, *args, **kwargs)
        keeper.restore()
        return history

    @contextlib.contextmanager
    def averaged_weights(self):
        """Within the block, the model holds the optimizer's averages of its
        weights (`use_ema`); after it, the training weights again. Without
        averaging, or before the first step, the weights as they are."""
        optimizer = getattr(self, "optimizer", None)
        if not self.uses_ema or not optimizer.built:
            yield
            return
        variables = self.trainable_variables
        saved = [ops.convert_to_numpy(v) for v in variables]
        optimizer.finalize_variable_values(variables)
        try:
            yield
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)

    def evaluate(self, x=None, *args, **kwargs):
        self.check_targets(x)
        return super().evaluate(x, *args, **kwargs)

    def check_targets(self, data):
        """Refuse batches whose rows hold more targets than the gathered
        head reads (they would lose their last targets), when the batches
        say how many they hold (`max_targets`, as `Seq2SeqBatches`)."""
        held = getattr(data, "max_targets", None)
        if held is None or self.target_head == "full":
            return
        if self.max_targets is not None and held > self.max_targets:
            raise ValueError(
                f"these batches hold up to {held} target tokens in a row, "
                f"but the trainer's head reads {self.max_targets} "
                f"(max_targets): create the trainer with max_targets >= "
                f"{held}"
            )

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """Saves the UniLM model's weights, loadable without the trainer."""
        return self.model.save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        return self.model.load_weights(filepath, **kwargs)


class TrainingWeights(keras.callbacks.Callback):
    """Keeps the weights as trained, to undo what Keras's `fit()` does at
    its end under `use_ema` (it writes the optimizer's averages into the
    weights). Read before training and after every epoch, when both
    backends hold the current values in the variables."""

    def on_train_begin(self, logs=None):
        self.keep()

    def on_epoch_end(self, epoch, logs=None):
        self.keep()

    def keep(self):
        variables = self.model.trainable_variables
        self.values = [ops.convert_to_numpy(v) for v in variables]

    def restore(self):
        for variable, value in zip(self.model.trainable_variables, self.values):
            variable.assign(value)
