"""Training strategies against exposure bias, one short class each.

A strategy overrides at most two hooks of the step, both written with
`keras.ops` so they run unchanged on every backend and inside a compiled
step:

- `prepare_batch(token_ids, segment_ids, seed_generator)` returns the
  `(inputs, segment_ids)` the model reads. Labels are always the original
  `token_ids`: a corrupted input still has to predict the true next token.
- `loss(trainer, batch)` returns `(objective, {figure: value})`. The
  trainer offers what custom passes need: `trainer.network` (the UniLM
  layers, callable with `token_embeddings=` or `output='hidden'`),
  `trainer.cross_entropy(batch, token_embeddings=None)`,
  `trainer.target_logits(batch, training=True)` and
  `trainer.head_at_targets(batch, hidden)` (the MLM head at the scored
  positions only: `(logits, labels, mask)`, whose
  `trainer.label_loss(logits, labels, mask)` is the training loss, label
  smoothing included; see `models/targets.py` for `gather`/`spread`
  between slots and positions), `trainer.target_loss(batch, logits)` (full
  logits),
  `trainer.value_and_grad(fn, variable)` (differentiable gradients),
  `trainer.overridden(variable, value)`, `trainer.embeddings` (E),
  `trainer.seed_generator`, `trainer.optimizer.iterations` and
  `trainer.state_variables()` (every variable a loss may read).

Figures named in `metric_names` are logged as Keras metrics; a figure given
as `(value, measured)` counts only in the steps where `measured` is 1. A
strategy that trains a part of its own (professor's discriminator) creates
it in `build(trainer)`, which the trainer holds as `trainer.strategy_state`
and a run saves and restores with its checkpoints. Strategies are
dataclasses: their options are fields, validated on creation, and
`dataclasses.asdict(strategy)` records them in reports.
"""

import dataclasses
import math
from typing import ClassVar

import keras
from keras import ops

from models import backend
from models import targets
from models.losses import token_kl_divergence
from models.professor import Adversary
from models.professor import discriminator_loss
from models.professor import free_run_inputs
from models.professor import generator_loss
from models.professor import title_positions

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

    def build(self, trainer):
        """What this strategy trains itself, beside the model: None here."""
        return None

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


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_count(name, value):
    """A positive integer; `2.0` passes (the CLI parses numbers loosely)."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def parse_floats(name, value) -> tuple:
    """`(1, 0.5)`, `'1,0.5'` or `1` -> floats: the CLI hands lists over as
    comma-separated strings and single numbers as numbers."""
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return tuple(float(item) for item in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be numbers (e.g. 1,0.5), got {value!r}"
        ) from None


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


def topk_embeddings(network, logits, k: int):
    """Per position, the mean of the `k` likeliest tokens' embeddings,
    weighted by their probabilities renormalised over those `k`.

    A softmax over the top-k logits is exactly that renormalisation.
    Differentiable in the logits and in E, like the hidden-state feed.
    """
    values, indices = ops.top_k(ops.cast(logits, "float32"), k)
    vectors = network["Embedding-Token"](indices)  # (batch, length, k, h)
    weights = ops.cast(ops.softmax(values, axis=-1), vectors.dtype)
    return ops.einsum("blk,blkh->blh", weights, vectors)


@register
@dataclasses.dataclass
class TeaForN(Baseline):
    """Teacher-forcing with N-grams (Goodman et al., 2020).

    The whole network runs `n` times with the same weights. Pass 1 is
    teacher-forced; pass k + 1 keeps the source positions' token
    embeddings and, at every target position t, feeds a vector from pass
    k's position t - 1 in place of t's token embedding (segment and
    position embeddings are still added): its final hidden state
    (`feed='hidden'`) or the probability-weighted mean of the embeddings
    of its `topk` likeliest tokens (`feed='topk'`). Gradients flow through
    every pass. Decoding runs pass 1 only, so inference is unchanged.

    The objective is Σ_k λ_k·CE_k with λ = `weights` (default 1.0 each),
    deliberately not divided by Σλ: the weights say both how much each
    pass counts and the overall scale, and `weights=0.5,0.5` gives the
    mean. With n = 1 and λ = 1 it is exactly the baseline. Under Adam the
    overall scale hardly matters; under SGD it scales the step. Logs
    `ce_1`, ..., `ce_n`; `ce_1` is the baseline's loss, so it compares
    across strategies where `loss` does not.
    """

    name: ClassVar[str] = "teaforn"
    n: int = 2
    weights: tuple | str | float | None = None
    feed: str = "hidden"
    topk: int = 4

    def __post_init__(self):
        self.n = _check_count("n", self.n)
        self.topk = _check_count("topk", self.topk)
        _check_choice("feed", self.feed, ("hidden", "topk"))
        if self.weights is None:
            self.weights = (1.0,) * self.n
        self.weights = parse_floats("weights", self.weights)
        if len(self.weights) != self.n:
            raise ValueError(
                f"weights has {len(self.weights)} values for n={self.n} passes"
            )
        if min(self.weights) < 0 or not sum(self.weights) > 0:
            raise ValueError(
                f"weights must be >= 0 and not all 0, got {self.weights}"
            )
        self.metric_names = tuple(f"ce_{k}" for k in range(1, self.n + 1))

    def fed_vectors(self, network, hidden, logits, index):
        """What pass k hands to pass k + 1, per position (before shifting):
        `logits` are at the scored slots of `index` only, which are the
        positions whose outputs are fed."""
        if self.feed == "hidden":
            return hidden
        vectors = topk_embeddings(network, logits, self.topk)
        return targets.spread(vectors, index)

    def loss(self, trainer, batch):
        network = trainer.network
        index = trainer.target_index(batch)
        fed, total, figures = None, 0.0, {}
        for k, weight in enumerate(self.weights, start=1):
            hidden = network(
                batch.inputs,
                batch.segment_ids,
                token_embeddings=fed,
                training=True,
                output="hidden",
            )
            logits, labels, mask = trainer.head_at_targets(batch, hidden, index)
            figures[f"ce_{k}"] = trainer.label_loss(logits, labels, mask)
            total += weight * figures[f"ce_{k}"]
            if k < self.n:
                fed = feed_previous(
                    network["Embedding-Token"](batch.inputs),
                    self.fed_vectors(network, hidden, logits, index),
                    target_positions(batch.inputs, batch.segment_ids),
                )
        return total, figures


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
    _check_choice("schedule", schedule, SCHEDULES)
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


@register
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
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("mix", self.mix, ("argmax", "sample", "soft"))
        for name in ("epsilon_min", "rate", "max_rate"):
            _check_rate(name, getattr(self, name))
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
        network = trainer.network
        index = trainer.target_index(batch)
        logits, _, _ = trainer.target_logits(batch, training=False)
        logits = ops.stop_gradient(logits) / self.temperature
        if self.mix == "soft":
            layer = network["Embedding-Token"]
            table = ops.cast(layer.embeddings, layer.compute_dtype)
            probas = ops.cast(ops.softmax(logits, axis=-1), table.dtype)
            mixed = targets.spread(ops.matmul(probas, table), index)
            embedded = layer(batch.inputs)
            return batch.inputs, feed_previous(embedded, mixed, chosen)
        if self.mix == "sample":
            flat = ops.reshape(logits, (-1, ops.shape(logits)[-1]))
            drawn = keras.random.categorical(flat, 1, seed=seed_generator)
            predicted = ops.reshape(drawn, ops.shape(logits)[:2])
        else:
            predicted = ops.argmax(logits, axis=-1)
        predicted = targets.spread(ops.cast(predicted, "int32"), index)
        return feed_previous(batch.inputs, predicted, chosen), None

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


@register
@dataclasses.dataclass
class FGM(Baseline):
    """Fast gradient method on the token embeddings (Miyato et al., 2017).

    With g = ∂CE/∂E over the whole matrix (held constant), a second pass
    reads E + δ, δ = ε·g/(‖g‖ + 1e-8), and the objective is the mean
    ½(CE(E) + CE(E + δ)): ε = 0 gives the baseline's loss and, up to the
    order of float32 sums, its gradients. (The usual PyTorch FGM recipe
    adds the two gradients, twice these; bert4keras's
    `adversarial_training` trains on CE(E + δ) alone and subtracts δ
    after the update, which is not exact in floating point.) The second
    pass reads E + δ through `trainer.overridden`: JAX maps E to E + δ
    without writing it, TensorFlow assigns E + δ and then the saved value
    back, so after a step E has moved by exactly the optimizer's update.
    ε defaults to 0.5, as in bert4keras's example. Logs `adv_ce`,
    CE(E + δ), and `delta_norm`, ‖δ‖ (ε unless g = 0).
    """

    name: ClassVar[str] = "fgm"
    metric_names: ClassVar[tuple] = ("adv_ce", "delta_norm")
    epsilon: float = 0.5

    def __post_init__(self):
        if self.epsilon < 0:
            raise ValueError(
                f"epsilon must not be negative, got {self.epsilon}"
            )

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
        delta_norm = ops.cast(ops.sqrt(ops.sum(ops.square(delta))), "float32")
        figures = {"adv_ce": adversarial, "delta_norm": delta_norm}
        return 0.5 * (cross_entropy + adversarial), figures


def _check_positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _norm(x, per_row):
    """‖x‖ of the whole matrix, or of each row (kept as a column)."""
    if per_row:
        return ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
    return ops.sqrt(ops.sum(ops.square(x)))


def project(delta, epsilon, per_row):
    """δ scaled back onto the ε-ball where it left it (ε = inf: δ)."""
    if math.isinf(epsilon):
        return delta
    return delta * ops.minimum(1.0, epsilon / (_norm(delta, per_row) + 1e-12))


@register
@dataclasses.dataclass
class PGD(Baseline):
    """Projected gradient descent on the token embeddings (Madry et al.,
    2018; for text, Zhu et al., "FreeLB", 2020).

    `steps` K ascent steps on δ, from δ = 0: g_k = ∂CE/∂E at E + δ_k (held
    constant), δ_{k+1} = Π(δ_k + α·g_k/(‖g_k‖ + 1e-8)), Π the projection
    onto the ε-ball; α = `alpha`, ε = `epsilon` (`inf`: no projection).
    `norm='matrix'` takes ‖·‖ over the whole matrix E, as `fgm` does;
    `norm='row'` per embedding row (each row steps α along its own
    gradient and stays within ε). E is both the input lookup and the tied
    output projection, so δ perturbs both, as in `fgm`. The objective is
    ½(CE(E) + CE(E + δ_K)), or with `average=True` ½(CE(E) + mean_k
    CE(E + δ_k)), k = 1..K (FreeLB's mean over the ascent steps). With
    K = 1 and ε = inf, δ_1 is `fgm`'s δ for ε = α. Each step reads E + δ
    through `trainer.overridden`, so E is restored exactly. K + 1 passes,
    each differentiated, so about K + 1 baseline steps (bert4torch's
    defaults: K = 3, α = 0.3, ε = 1). Logs `adv_ce` (the adversarial term) and
    `delta_norm` (‖δ_K‖, the largest row norm with `norm='row'`).
    """

    name: ClassVar[str] = "pgd"
    metric_names: ClassVar[tuple] = ("adv_ce", "delta_norm")
    steps: int = 3
    alpha: float = 0.3
    epsilon: float = 1.0
    norm: str = "matrix"
    average: bool | int = False

    def __post_init__(self):
        self.steps = _check_count("steps", self.steps)
        _check_positive("alpha", self.alpha)
        _check_positive("epsilon", self.epsilon)
        _check_choice("norm", self.norm, ("matrix", "row"))
        _check_choice("average", self.average, (False, True, 0, 1))
        self.average = bool(self.average)

    def ascend(self, delta, grad):
        """One projected ascent step of δ along `grad`."""
        per_row = self.norm == "row"
        step = self.alpha * grad / (_norm(grad, per_row) + 1e-8)
        return project(delta + step, self.epsilon, per_row)

    def loss(self, trainer, batch):
        embeddings = trainer.embeddings

        def cross_entropy():
            return trainer.cross_entropy(batch)

        clean, grad = trainer.value_and_grad(cross_entropy, embeddings)
        delta = self.ascend(0.0, ops.stop_gradient(grad))
        adversarial = []
        for _ in range(self.steps - 1):
            with trainer.overridden(embeddings, embeddings + delta):
                value, grad = trainer.value_and_grad(cross_entropy, embeddings)
            adversarial.append(value)
            delta = self.ascend(delta, ops.stop_gradient(grad))
        with trainer.overridden(embeddings, embeddings + delta):
            adversarial.append(cross_entropy())
        if not self.average:
            adversarial = adversarial[-1:]
        adv_ce = sum(adversarial) / len(adversarial)
        delta_norm = ops.max(_norm(delta, self.norm == "row"))
        figures = {
            "adv_ce": adv_ce,
            "delta_norm": ops.cast(delta_norm, "float32"),
        }
        return 0.5 * (clean + adv_ce), figures


@register
@dataclasses.dataclass
class VAT(Baseline):
    """Virtual adversarial training (Miyato et al., TPAMI 2018) on the
    token embeddings.

    p = the model's next-token distributions at the target positions on
    a clean pass (held constant). The perturbation r of E that most
    changes them is found by `power_iterations` power iterations from a
    random unit direction d: r = ξ·d, g = ∂KL(p ‖ p(E + r))/∂r, d =
    g/‖g‖ (ξ = `xi`), and r_adv = ε·d (ε = `epsilon`), norms over the
    whole matrix as in `fgm`. The objective is CE + λ·KL(p ‖ p(E +
    r_adv)), λ = `weight`: no labels enter the adversarial term. As in
    `fgm` and `pgd`, E is both the input lookup and the tied output
    projection, and every perturbed pass reads E + r through
    `trainer.overridden`. All passes run in training mode (with dropout),
    so with dropout on the KL also holds the dropout noise. Costs one
    forward-backward pass per power iteration and one forward pass more
    than the baseline. Logs `ce` and `vat_kl`, the KL term before λ.
    """

    name: ClassVar[str] = "vat"
    metric_names: ClassVar[tuple] = ("ce", "vat_kl")
    epsilon: float = 1.0
    weight: float = 1.0
    xi: float = 1e-6
    power_iterations: int = 1

    def __post_init__(self):
        _check_positive("epsilon", self.epsilon)
        _check_positive("xi", self.xi)
        self.power_iterations = _check_count(
            "power_iterations", self.power_iterations
        )
        if not self.weight >= 0:
            raise ValueError(f"weight must not be negative, got {self.weight}")

    def divergence(self, trainer, batch, clean_logits):
        """KL(p ‖ the distributions of a pass over E as it reads now)."""
        logits, _, mask = trainer.target_logits(batch, training=True)
        return token_kl_divergence(clean_logits, logits, mask)

    def adversarial_direction(self, trainer, batch, clean_logits):
        """The unit direction d after the power iterations (constant)."""
        embeddings = trainer.embeddings
        direction = keras.random.normal(
            ops.shape(embeddings), seed=trainer.seed_generator
        )
        for _ in range(self.power_iterations):
            probe = self.xi * direction / (_norm(direction, False) + 1e-12)
            # The gradient in r at r = ξ·d is the gradient in E at E + ξ·d:
            # E + r is what every pass reads.
            with trainer.overridden(embeddings, embeddings + probe):
                _, direction = trainer.value_and_grad(
                    lambda: self.divergence(trainer, batch, clean_logits),
                    embeddings,
                )
            direction = ops.stop_gradient(direction)
        return direction / (_norm(direction, False) + 1e-12)

    def loss(self, trainer, batch):
        logits, labels, mask = trainer.target_logits(batch, training=True)
        cross_entropy = trainer.label_loss(logits, labels, mask)
        clean = ops.stop_gradient(logits)
        direction = self.adversarial_direction(trainer, batch, clean)
        embeddings = trainer.embeddings
        with trainer.overridden(
            embeddings, embeddings + self.epsilon * direction
        ):
            divergence = self.divergence(trainer, batch, clean)
        figures = {"ce": cross_entropy, "vat_kl": divergence}
        return cross_entropy + self.weight * divergence, figures


@register
@dataclasses.dataclass
class RDrop(Baseline):
    """R-Drop (Liang et al., NeurIPS 2021): two passes with different
    dropout draws, P1 and P2 their target-position distributions.

    The paper's loss is CE_1 + CE_2 + α·½(KL(P1 ‖ P2) + KL(P2 ‖ P1));
    ours is half of it, ½(CE_1 + CE_2) + α·½·½(KL(P1 ‖ P2) + KL(P2 ‖
    P1)), so that `loss` compares with the baseline's while α (`alpha`)
    keeps the paper's meaning (its weight against the cross-entropy).
    α = 0 is the mean of two baseline losses; without dropout the passes
    agree and the KL term is 0. The paper tunes α per task; 1.0 here.
    Costs two passes. Logs `ce`
    (½(CE_1 + CE_2)) and `rdrop_kl`, the symmetric KL before α.
    """

    name: ClassVar[str] = "rdrop"
    metric_names: ClassVar[tuple] = ("ce", "rdrop_kl")
    alpha: float = 1.0

    def __post_init__(self):
        if not self.alpha >= 0:
            raise ValueError(f"alpha must not be negative, got {self.alpha}")

    def loss(self, trainer, batch):
        first, labels, mask = trainer.target_logits(batch, training=True)
        second, _, _ = trainer.target_logits(batch, training=True)
        cross_entropy = 0.5 * (
            trainer.label_loss(first, labels, mask)
            + trainer.label_loss(second, labels, mask)
        )
        divergence = 0.5 * (
            token_kl_divergence(first, second, mask)
            + token_kl_divergence(second, first, mask)
        )
        figures = {"ce": cross_entropy, "rdrop_kl": divergence}
        return cross_entropy + 0.5 * self.alpha * divergence, figures


@register
@dataclasses.dataclass
class Professor(Baseline):
    """Professor forcing (Lamb, Goyal et al., 2016) for the UniLM BERT.

    Three passes per step. The teacher-forced pass gives the cross-entropy
    and H_t, the final hidden states of the title positions. The free run
    (`models/professor.py`, `free_run_inputs`) fills each title position
    with the model's own output, greedy (`free_run='greedy'`) or sampled
    (`'sample'`): an in-graph loop of full passes, one per title slot,
    without dropout or gradient, inside the compiled step. The free pass
    reads the source and that generated title, with dropout and gradient,
    and gives H_f at the same positions.

    A discriminator D (`Discriminator`: `discriminator_layers` residual
    convolutions of `discriminator_units` features, pooled) has its own
    Adam optimizer (`discriminator_lr`): it takes one step per measured
    step on ½·[−log D(H_t) − log(1 − D(H_f))], both held constant. The
    model minimises CE + λ·C_f with C_f = −log D(H_f), λ =
    `adversarial_weight`: its free-running dynamics should pass for
    teacher-forced ones, while H_t is held constant (the paper's main
    variant). C_f reads D's weights but trains only the model; D's loss
    trains only D. D and its optimizer are saved and restored with a run.

    Every `every` optimizer steps (1: every step) the free run, D's step
    and C_f happen; the steps between are plain teacher forcing. λ is 0
    for the first `warmup` optimizer steps (D still learns). With λ = 0
    the model trains exactly as `baseline` while D measures how far apart
    the two dynamics are. Logs `ce` (the baseline's loss, comparable
    across strategies), `adversarial` (C_f), `disc_loss` and
    `disc_accuracy` (over both runs; 0.5 is chance), the last three as
    means over the steps that measured them.
    """

    name: ClassVar[str] = "professor"
    metric_names: ClassVar[tuple] = (
        "ce",
        "adversarial",
        "disc_loss",
        "disc_accuracy",
    )
    adversarial_weight: float = 1.0
    free_run: str = "greedy"
    every: int = 1
    warmup: int = 0
    discriminator_units: int = 128
    discriminator_layers: int = 2
    discriminator_lr: float = 1e-4

    def __post_init__(self):
        if not self.adversarial_weight >= 0:
            raise ValueError(
                "adversarial_weight must not be negative, got "
                f"{self.adversarial_weight}"
            )
        _check_choice("free_run", self.free_run, ("greedy", "sample"))
        self.every = _check_count("every", self.every)
        self.discriminator_units = _check_count(
            "discriminator_units", self.discriminator_units
        )
        self.discriminator_layers = _check_count(
            "discriminator_layers", self.discriminator_layers
        )
        if isinstance(self.warmup, bool) or int(self.warmup) != self.warmup:
            raise ValueError(f"warmup must be an integer, got {self.warmup!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must not be negative, got {self.warmup}")
        self.warmup = int(self.warmup)
        if not self.discriminator_lr > 0:
            raise ValueError(
                "discriminator_lr must be positive, got "
                f"{self.discriminator_lr}"
            )

    def build(self, trainer):
        if self.every > 1 and not backend.branches_may_synchronise():
            raise ValueError(
                "professor: every > 1 is not available with TensorFlow's "
                "data parallelism (MirroredStrategy cannot synchronise "
                "replicas within a branch taken at run time); use every=1, "
                "or the JAX backend"
            )
        return Adversary(
            trainer.network.config.hidden_size,
            self.discriminator_units,
            self.discriminator_layers,
            self.discriminator_lr,
            name="professor_adversary",
        )

    def loss(self, trainer, batch):
        network = trainer.network
        teacher = network(
            batch.inputs, batch.segment_ids, training=True, output="hidden"
        )
        logits, labels, mask = trainer.head_at_targets(batch, teacher)
        cross_entropy = trainer.label_loss(logits, labels, mask)
        step = trainer.optimizer.iterations
        weight = self.adversarial_weight * ops.cast(
            step >= self.warmup, "float32"
        )
        if self.every == 1:
            terms = self.adversarial_terms(trainer, batch, teacher)
            measured = None
        else:
            measured = ops.equal(step % self.every, 0)
            terms = backend.cond(
                measured,
                lambda: self.adversarial_terms(trainer, batch, teacher),
                lambda: (ops.zeros(()), ops.zeros(()), ops.zeros(())),
                trainer.state_variables(),
            )
            measured = ops.cast(measured, "float32")
        adversarial, disc_loss, accuracy = terms
        figures = {
            "adversarial": adversarial,
            "disc_loss": disc_loss,
            "disc_accuracy": accuracy,
        }
        if measured is not None:
            figures = {k: (v, measured) for k, v in figures.items()}
        figures["ce"] = cross_entropy
        return cross_entropy + weight * adversarial, figures

    def adversarial_terms(self, trainer, batch, teacher):
        """(C_f, D's loss, D's accuracy), after one step of D."""
        adversary = trainer.strategy_state
        title = title_positions(batch.token_ids, batch.segment_ids)
        free = self.free_states(trainer, batch)
        # Before D's step: C_f and D's loss see the same D.
        adversarial = generator_loss(adversary, free, title)
        teacher, free = ops.stop_gradient(teacher), ops.stop_gradient(free)
        disc_loss, accuracy = adversary.train(
            lambda: discriminator_loss(adversary, teacher, free, title),
            trainer.state_variables(),
        )
        return adversarial, disc_loss, accuracy

    def free_states(self, trainer, batch):
        """Final hidden states of the free pass: the network (training,
        with gradient) reading the source and its own free-run title."""
        uniforms = None
        if self.free_run == "sample":
            uniforms = keras.random.uniform(
                ops.shape(batch.token_ids), seed=trainer.seed_generator
            )
        network = trainer.network
        inputs = free_run_inputs(
            network, batch.token_ids, batch.segment_ids, uniforms
        )
        return network(
            inputs, batch.segment_ids, training=True, output="hidden"
        )
