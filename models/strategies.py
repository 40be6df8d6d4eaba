"""Training strategies against exposure bias, one short class each.

A strategy overrides at most two hooks, both written with `keras.ops` so
they run unchanged on every backend and inside a compiled step:

- `prepare_batch(token_ids, segment_ids, seed_generator)` returns the
  `(inputs, segment_ids)` the model reads. Labels are always the original
  `token_ids`: a corrupted input still has to predict the true next token.
- `loss(trainer, batch)` returns `(objective, {figure: value})`. The
  trainer offers what custom passes need: `trainer.network` (the UniLM
  layers, callable with `token_embeddings=` or `output='hidden'`),
  `trainer.cross_entropy(batch, token_embeddings=None)`,
  `trainer.target_loss(batch, logits)`,
  `trainer.value_and_grad(fn, variable)` (differentiable gradients),
  `trainer.overridden(variable, value)`, `trainer.embeddings` (E),
  `trainer.seed_generator` and `trainer.optimizer.iterations`.

Figures named in `metric_names` are logged as Keras metrics. Strategies are
dataclasses: their options are fields, validated on creation, and
`dataclasses.asdict(strategy)` records them in reports.
"""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

STRATEGIES = {}


def register(cls):
    """Class decorator: make `cls` available as `get(cls.name)`."""
    STRATEGIES[cls.name] = cls
    return cls


def get(name, **options):
    """A strategy by name, e.g. `get('replace', token_rate=0.3)`."""
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[name](**options)


def _check_rate(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def target_positions(token_ids, segment_ids):
    """Target-segment tokens (segment 1, not padding), final [SEP] included."""
    return ops.logical_and(
        ops.equal(segment_ids, 1), ops.not_equal(token_ids, 0)
    )


@register
@dataclasses.dataclass
class Baseline:
    """Teacher forcing: the model reads the true previous tokens."""

    name: ClassVar[str] = "baseline"
    metric_names: ClassVar[tuple] = ()

    def prepare_batch(self, token_ids, segment_ids, seed_generator):
        return token_ids, segment_ids

    def loss(self, trainer, batch):
        return trainer.cross_entropy(batch), {}


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


@register
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
        _check_rate("sample_rate", self.sample_rate)
        _check_rate("token_rate", self.token_rate)
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
            pool = ops.not_equal(token_ids, 0)
        chosen = self.chosen(token_ids, segment_ids, seed_generator)
        drawn = draw_from_pool(token_ids, pool, seed_generator)
        return ops.where(chosen, drawn, token_ids), segment_ids


@register
@dataclasses.dataclass
class GradientPenalty(Baseline):
    """Cross-entropy + 0.5·ε·‖∂CE/∂E‖², E the token-embedding matrix.

    The gradient is the full one: E is both the input lookup and the tied
    MLM output projection, summed over repeated tokens before squaring.
    (bojone's `gradient_penalty.py` squares the `.values` of TF1's
    IndexedSlices gradient instead: one slice per looked-up token, i.e. the
    gradient w.r.t. each input embedding vector, plus the output part.)
    Training needs the penalty's own gradient, a second derivative (double
    backprop), which `trainer.value_and_grad` keeps. Logs `gp`, the term
    added to the cross-entropy.
    """

    name: ClassVar[str] = "gp"
    metric_names: ClassVar[tuple] = ("gp",)
    epsilon: float = 1.0

    def loss(self, trainer, batch):
        cross_entropy, grad = trainer.value_and_grad(
            lambda: trainer.cross_entropy(batch), trainer.embeddings
        )
        # float32 like the loss, whatever the variable's dtype.
        penalty = ops.cast(
            0.5 * self.epsilon * ops.sum(ops.square(grad)), "float32"
        )
        return cross_entropy + penalty, {"gp": penalty}


def feed_previous(inputs, previous, target):
    """At target positions, replace the input with `previous` one step back.

    The output at position t - 1 is the model's guess of token t, so it is
    what decoding would have fed at t. `inputs`/`previous` are token ids
    (batch, length) or embeddings (batch, length, hidden).
    """
    shifted = ops.concatenate([previous[:, :1], previous[:, :-1]], axis=1)
    if len(ops.shape(inputs)) == 3:
        target = target[..., None]
    return ops.where(target, ops.cast(shifted, inputs.dtype), inputs)


@register
@dataclasses.dataclass
class TeaForN(Baseline):
    """Teacher-forcing with N-grams (Goodman et al., 2020).

    Pass 1 is teacher-forced; pass k + 1 runs the same weights with the
    target positions' token embeddings replaced by pass k's final hidden
    states one position back (its guess of that token, in embedding
    space), so the model learns to continue from its own outputs. The
    objective is the `discount`-weighted mean of the passes' cross-entropy;
    `ce_1` ... `ce_n` are logged.
    """

    name: ClassVar[str] = "teaforn"
    n: int = 2
    discount: float = 1.0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        self.metric_names = tuple(f"ce_{k}" for k in range(1, self.n + 1))

    def loss(self, trainer, batch):
        network = trainer.network
        embeddings = network["Embedding-Token"](batch.inputs)
        target = target_positions(batch.inputs, batch.segment_ids)
        fed, total, figures = None, 0.0, {}
        for k in range(self.n):
            hidden = network(
                batch.inputs,
                batch.segment_ids,
                token_embeddings=fed,
                training=True,
                output="hidden",
            )
            figures[f"ce_{k + 1}"] = trainer.target_loss(
                batch, network.mlm_logits(hidden)
            )
            total += self.discount**k * figures[f"ce_{k + 1}"]
            fed = feed_previous(embeddings, hidden, target)
        weights = sum(self.discount**k for k in range(self.n))
        return total / weights, figures


@register
@dataclasses.dataclass
class ScheduledSampling(Baseline):
    """Two-pass scheduled sampling for Transformers (Mihaylova & Martins,
    2019).

    A first pass without gradient (and without dropout, as at decoding)
    gives greedy predictions; each target input token is then replaced by
    the prediction for its position with probability `rate_at(step)`,
    rising linearly from 0 to `rate` over `warmup_steps` optimizer steps,
    and the second pass is trained on the original labels. Logs
    `sampling_rate`.
    """

    name: ClassVar[str] = "scheduled"
    metric_names: ClassVar[tuple] = ("sampling_rate",)
    rate: float = 0.5
    warmup_steps: int = 10000

    def __post_init__(self):
        _check_rate("rate", self.rate)
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must not be negative")

    def rate_at(self, step):
        """`rate` scaled by the warm-up done; constant without warm-up."""
        if not self.warmup_steps:
            return ops.convert_to_tensor(self.rate, "float32")
        progress = ops.cast(step, "float32") / self.warmup_steps
        return self.rate * ops.minimum(progress, 1.0)

    def loss(self, trainer, batch):
        logits = trainer.network(
            batch.inputs, batch.segment_ids, training=False, output="logits"
        )
        predicted = ops.argmax(ops.stop_gradient(logits), axis=-1)
        rate = self.rate_at(trainer.optimizer.iterations)
        coin = keras.random.uniform(
            ops.shape(batch.inputs), seed=trainer.seed_generator
        )
        target = ops.logical_and(
            target_positions(batch.inputs, batch.segment_ids), coin < rate
        )
        inputs = feed_previous(batch.inputs, predicted, target)
        cross_entropy = trainer.cross_entropy(batch._replace(inputs=inputs))
        return cross_entropy, {"sampling_rate": rate}


@register
@dataclasses.dataclass
class FGM(Baseline):
    """Fast gradient method on the token embeddings (Miyato et al., 2017).

    E moves by δ = ε·g/‖g‖, g = ∂CE/∂E (held constant), for a second pass;
    the objective is CE(E) + CE(E + δ) and E is restored, as bert4keras's
    `adversarial_training` does (its example uses ε = 0.5). Logs `adv_ce`.
    """

    name: ClassVar[str] = "fgm"
    metric_names: ClassVar[tuple] = ("adv_ce",)
    epsilon: float = 0.5

    def loss(self, trainer, batch):
        embeddings = trainer.embeddings
        cross_entropy, grad = trainer.value_and_grad(
            lambda: trainer.cross_entropy(batch), embeddings
        )
        grad = ops.stop_gradient(grad)
        norm = ops.sqrt(ops.sum(ops.square(grad)))
        delta = self.epsilon * grad / (norm + 1e-8)
        with trainer.overridden(embeddings, embeddings + delta):
            adversarial = trainer.cross_entropy(batch)
        return cross_entropy + adversarial, {"adv_ce": adversarial}
