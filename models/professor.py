"""What professor forcing needs besides its loss (`strategies.Professor`).

- `free_run_inputs`: the batch as the model would read it while decoding
  its own title, computed inside the compiled train step;
- `Discriminator`: a small network that tells a sequence of teacher-forced
  hidden states from a free-running one, and the two losses that read it
  (`generator_loss`, `discriminator_loss`);
- `Adversary`: the discriminator with its own optimizer, as the trainer
  holds them (see its docstring for where their state lives).
"""

import keras
from keras import ops

from models import backend
from models.targets import target_positions


def title_positions(token_ids, segment_ids):
    """Title (segment 1, not padding) positions, final [SEP] included:
    the target segment, as every strategy reads it."""
    return target_positions(token_ids, segment_ids)


def title_slots(token_ids, segment_ids):
    """(batch, length) int32: j at a row's j-th title position, -1 elsewhere."""
    title = title_positions(token_ids, segment_ids)
    slots = ops.cumsum(ops.cast(title, "int32"), axis=1) - 1
    return ops.where(title, slots, -1)


def pick_tokens(logits, uniforms=None):
    """Per position, the argmax token (`uniforms` None) or a draw from
    softmax(logits) by inverse CDF: the first token whose cumulative
    probability exceeds the position's uniform in [0, 1).

    Drawing from uniforms made beforehand keeps random state out of the
    decoding loop, which JAX could not carry out of it.
    """
    if uniforms is None:
        return ops.cast(ops.argmax(logits, axis=-1), "int32")
    cdf = ops.cumsum(ops.softmax(ops.cast(logits, "float32"), axis=-1), -1)
    below = ops.less(cdf, (uniforms * cdf[..., -1])[..., None])
    drawn = ops.sum(ops.cast(below, "int32"), axis=-1)
    return ops.minimum(drawn, ops.shape(logits)[-1] - 1)


def free_run_inputs(network, token_ids, segment_ids, uniforms=None):
    """`token_ids` with every title position holding the model's own output.

    Each row keeps its source, segments and padding; its title positions
    (as many as its reference title has, final [SEP] included) are filled
    left to right with what the model predicts after reading its own
    earlier outputs, as greedy decoding (`uniforms` None) or sampling
    (`uniforms`, (batch, length) in [0, 1): position p draws with its own)
    would: the first from the source's closing [SEP], each next one from
    the title so far. A row goes on for the length of its reference title
    even past an [SEP] of its own, so that both runs cover the same
    positions.

    An in-graph loop, one full pass without dropout per title slot (the
    MLM head at one position per row), for as many slots as the batch's
    longest title: it runs inside the compiled train step on every
    backend. Slot j's outputs read only slots < j (the UniLM mask), which
    are final by then. Nothing here carries a gradient: the result is
    token ids.
    """
    token_ids = ops.cast(token_ids, "int32")
    slots = title_slots(token_ids, segment_ids)

    def step(slot, inputs):
        hidden = network(inputs, segment_ids, training=False, output="hidden")
        # Per row, the slot's position (0 where the title is shorter: not
        # written) and the output one position back, the model's token.
        here = ops.equal(slots, slot)
        target = ops.cast(ops.argmax(here, axis=1), "int32")[:, None]
        back = ops.maximum(target - 1, 0)
        reads = ops.take_along_axis(hidden, back[..., None], axis=1)
        logits = network.mlm_logits(reads)[:, 0]
        draws = None
        if uniforms is not None:
            draws = ops.take_along_axis(uniforms, target, axis=1)[:, 0]
        chosen = pick_tokens(logits, draws)[:, None]
        return ops.where(here, chosen, inputs)

    inputs = ops.fori_loop(0, ops.max(slots) + 1, step, token_ids)
    return ops.stop_gradient(inputs)


def _row_mean(values, title):
    """Mean of per-row `values` over the rows that have a title (padding
    rows have none), over the global batch also when replicas each hold a
    part of it."""
    rows = ops.cast(ops.any(title, axis=1), "float32")
    count = backend.replica_sum(ops.sum(rows))
    total = backend.replica_sum(ops.sum(values * rows))
    return total / ops.maximum(count, 1.0)


def generator_loss(adversary, free, title):
    """C_f = −log D(free): small when the free-running states `free` pass
    for teacher-forced ones. Trains the model, never D."""
    return _row_mean(ops.softplus(-adversary(free, title)), title)


def discriminator_loss(adversary, teacher, free, title):
    """(½·[−log D(teacher) − log(1 − D(free))], D's accuracy over both).

    The binary cross-entropy of telling teacher-forced states (label 1)
    from free-running ones (label 0), from logits. Trains D, never the
    model: the caller holds both inputs constant.
    """
    real, fake = adversary(teacher, title), adversary(free, title)
    loss = _row_mean(ops.softplus(-real) + ops.softplus(fake), title)
    right = ops.cast(real > 0, "float32") + ops.cast(fake < 0, "float32")
    return 0.5 * loss, 0.5 * _row_mean(right, title)


class Discriminator(keras.layers.Layer):
    """Logit that a sequence of hidden states comes from teacher forcing.

    The states of the title positions (`mask`) are projected to `units`
    features, mixed along the title by `layers` residual 1-D convolutions
    (kernel 3, dilations 1, 2, 4, ...: a receptive field of 2^(layers+1)
    - 1 positions) that see zeros outside the title, pooled (mean and max
    over the title) and classified by a hidden layer. Lamb et al. use a
    bidirectional GRU; convolutions read the same sequence in parallel
    instead of a scan over the padded length. Always float32: it is small,
    and its loss must not depend on the model's compute dtype.
    """

    def __init__(self, units=128, layers=2, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.units = units
        self.depth = layers
        self.project = keras.layers.Dense(units, activation="gelu")
        self.convolutions = [
            keras.layers.Conv1D(
                units,
                3,
                padding="same",
                dilation_rate=2**index,
                activation="gelu",
            )
            for index in range(layers)
        ]
        self.hidden = keras.layers.Dense(units, activation="gelu")
        self.classify = keras.layers.Dense(1)

    def build(self, input_shape):
        batch, length, _ = input_shape
        self.project.build(input_shape)
        for convolution in self.convolutions:
            convolution.build((batch, length, self.units))
        self.hidden.build((batch, 2 * self.units))
        self.classify.build((batch, self.units))

    def call(self, states, title):
        """(batch,) float32 logits; `title` (batch, length) marks the
        positions to read."""
        inside = ops.cast(title, "float32")[..., None]
        x = self.project(ops.cast(states, "float32")) * inside
        for convolution in self.convolutions:
            x = x + convolution(x) * inside
        count = ops.sum(inside, axis=1)
        mean = ops.sum(x, axis=1) / ops.maximum(count, 1.0)
        peak = ops.max(ops.where(inside > 0, x, -1e9), axis=1)
        # A row without a title (a padding row) pools to zeros, not -1e9.
        peak = ops.where(count > 0, peak, 0.0)
        pooled = ops.concatenate([mean, peak], axis=-1)
        return self.classify(self.hidden(pooled))[:, 0]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "layers": self.depth,
        }


class Adversary(keras.layers.Layer):
    """The discriminator and its own optimizer, as the trainer holds them.

    The trainer's optimizer moves the trainer's trainable variables, and
    the discriminator must move only under its own loss and optimizer. So
    this holder is frozen (`trainable=False`): the discriminator's weights
    and its optimizer's variables are non-trainable state of the trainer.
    That state is what the JAX step threads through its pure function (as
    it does the dropout seeds) and what `tasks/lib/rundir.py` saves with each
    checkpoint (`state_variables`). `train(fn, state_variables)` takes one
    optimizer step on the discriminator inside the train step.
    """

    def __init__(self, hidden_size, units, layers, learning_rate, **kwargs):
        super().__init__(**kwargs)
        self.discriminator = Discriminator(units, layers)
        self.discriminator.build((None, None, hidden_size))
        self.own_weights = list(self.discriminator.trainable_variables)
        self.own_optimizer = keras.optimizers.Adam(learning_rate)
        self.own_optimizer.build(self.own_weights)
        self.optimizer_variables = list(self.own_optimizer.variables)
        self.trainable = False
        self.built = True

    def state_variables(self):
        """Weights, then optimizer variables: everything a resume needs."""
        return [*self.own_weights, *self.optimizer_variables]

    def call(self, states, title):
        return self.discriminator(states, title)

    def train(self, fn, state_variables):
        """One optimizer step on `fn() = (loss, aux)`; returns (loss, aux).

        `state_variables`: every variable `fn` may read (the trainer's).
        """
        loss, aux, grads = backend.gradients(
            fn, self.own_weights, state_variables
        )
        self.own_optimizer.apply(grads, self.own_weights)
        return loss, aux
