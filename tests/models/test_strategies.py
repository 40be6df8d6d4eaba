"""Strategies: registry, replacement statistics, the gradient penalty
against finite differences; TeaForN, scheduled sampling and FGM against
the baseline (loss and gradients), hand-built passes, their schedule
formulas and an explicit FGM step; PGD against FGM and its ε-ball, VAT's
direction against random ones, R-Drop against two baseline draws."""

import math
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from models import strategies
from models.bert import BertNetwork
from models.strategies.names import STRATEGY_NAMES
from models.trainer import Batch
from models.trainer import Seq2SeqTrainer
from tests.common import NO_DROPOUT
from tests.common import TINY_TRAINER
from tests.common import mixed_batch
from tests.common import numpy_loss
from tests.common import trainer_model as tiny_model

VOCAB = TINY_TRAINER["vocab_size"]


def test_registry_names_and_options():
    assert set(strategies.STRATEGIES) == {
        "baseline",
        "replace",
        "gp",
        "teaforn",
        "scheduled",
        "fgm",
        "pgd",
        "vat",
        "rdrop",
        "professor",
        "scst",
        "mrt",
        "oracle",
    }
    strategy = strategies.get("replace", token_rate=0.1, pool="target")
    assert (strategy.sample_rate, strategy.token_rate) == (0.5, 0.1)
    assert strategies.get("gp").epsilon == 1.0


def test_registry_errors():
    with pytest.raises(ValueError, match="expected one of"):
        strategies.get("nope")
    with pytest.raises(ValueError, match="token_rate"):
        strategies.get("replace", token_rate=1.5)
    with pytest.raises(ValueError, match="pool"):
        strategies.get("replace", pool="vocab")
    with pytest.raises(TypeError):
        strategies.get("baseline", epsilon=1.0)


def test_strategy_names_are_the_registry_sorted():
    assert STRATEGY_NAMES == tuple(sorted(strategies.STRATEGIES))


def test_strategy_names_import_no_keras():
    """The command line reads the names before any backend starts."""
    script = (
        "import sys\n"
        "from models.strategies.names import STRATEGY_NAMES\n"
        "import models, models.strategies\n"
        "loaded = [m for m in ('keras', 'tensorflow', 'jax') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert 'replace' in STRATEGY_NAMES\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def distinct_token_batch(rows=600, length=12, seed=0):
    """Rows whose tokens are all different, so a change is visible as such.

    Returns token ids, segment ids and each row's source length and size.
    """
    rng = np.random.default_rng(seed)
    token_ids = np.zeros((rows, length), "int32")
    segment_ids = np.zeros((rows, length), "int32")
    sizes = rng.integers(5, length + 1, rows)
    sources = np.array([rng.integers(2, size - 1) for size in sizes])
    for row, (size, source) in enumerate(zip(sizes, sources)):
        token_ids[row, :size] = rng.permutation(np.arange(1, 100))[:size]
        segment_ids[row, source:size] = 1
    return token_ids, segment_ids, sources, sizes


def sample_level_bounds(eligible, sample_rate, token_rates):
    """Mean and standard deviation of a count of replaced tokens.

    Per row: a coin with `sample_rate`, then Binomial(eligible, q). The
    coin correlates a row's tokens, so the variance is not binomial.
    """
    k, q, s = eligible, token_rates, sample_rate
    mean = s * k * q
    second = s * (k * q * (1 - q) + (k * q) ** 2)
    return mean.sum(), np.sqrt((second - mean**2).sum())


def replace(strategy, token_ids, segment_ids, seed=0):
    inputs, segments = strategy.prepare_batch(
        ops.convert_to_tensor(token_ids),
        ops.convert_to_tensor(segment_ids),
        keras.random.SeedGenerator(seed),
    )
    return np.asarray(inputs), np.asarray(segments)


def test_replace_chooses_half_of_samples_times_token_rate():
    token_ids, segment_ids, sources, sizes = distinct_token_batch()
    strategy = strategies.get("replace")
    chosen = np.asarray(
        strategy.chosen(
            ops.convert_to_tensor(token_ids),
            ops.convert_to_tensor(segment_ids),
            keras.random.SeedGenerator(1),
        )
    )
    eligible = sizes - sources
    mean, std = sample_level_bounds(eligible, 0.5, np.full(len(sizes), 0.3))
    # Replaced fraction of target tokens: 0.5 x 0.3, within 5 sigma.
    assert abs(chosen.sum() / eligible.sum() - 0.15) < 5 * std / eligible.sum()
    assert abs(mean / eligible.sum() - 0.15) < 1e-12
    assert not chosen[segment_ids == 0].any()
    # The coin is per sample: a row is touched with 0.5 (1 - 0.7^k).
    touched = 0.5 * (1 - 0.7**eligible)
    spread = np.sqrt((touched * (1 - touched)).sum())
    assert abs(chosen.any(axis=1).sum() - touched.sum()) < 5 * spread


@pytest.mark.parametrize("pool", ["sequence", "target"])
def test_replace_statistics_and_pool(pool):
    token_ids, segment_ids, sources, sizes = distinct_token_batch()
    strategy = strategies.get("replace", pool=pool)
    inputs, segments = replace(strategy, token_ids, segment_ids)
    np.testing.assert_array_equal(segments, segment_ids)
    changed = inputs != token_ids
    # Source tokens and padding never change.
    assert not changed[segment_ids == 0].any()
    assert (inputs[token_ids == 0] == 0).all()
    # A chosen token keeps its value when the draw returns it: with all
    # tokens distinct that happens with probability 1 / pool size.
    eligible = sizes - sources
    pool_sizes = sizes if pool == "sequence" else eligible
    mean, std = sample_level_bounds(eligible, 0.5, 0.3 * (1 - 1 / pool_sizes))
    assert abs(changed.sum() - mean) < 5 * std
    from_source = 0
    for row in np.flatnonzero(changed.any(axis=1)):
        size, source = sizes[row], sources[row]
        allowed = (
            token_ids[row, :size]
            if pool == "sequence"
            else token_ids[row, source:size]
        )
        new = inputs[row][changed[row]]
        assert np.isin(new, allowed).all()
        from_source += np.isin(new, token_ids[row, :source]).sum()
    assert (from_source > 0) == (pool == "sequence")


def test_replace_draws_advance_with_the_generator():
    token_ids, segment_ids, _, _ = distinct_token_batch(rows=50)
    strategy = strategies.get("replace")
    generator = keras.random.SeedGenerator(3)
    first, second = (
        np.asarray(strategy.prepare_batch(token_ids, segment_ids, generator)[0])
        for _ in range(2)
    )
    assert (first != second).any()
    again, _ = replace(strategy, token_ids, segment_ids, seed=3)
    np.testing.assert_array_equal(again, first)


class Spy(strategies.Replace):
    """Replace that keeps the batch its loss received."""

    def loss(self, trainer, batch):
        self.seen = batch
        return super().loss(trainer, batch)


def test_replace_keeps_original_labels():
    """The loss scores corrupted inputs against the original tokens."""
    model = tiny_model(**NO_DROPOUT)
    token_ids, segment_ids = mixed_batch()
    spy = Spy(sample_rate=1.0, token_rate=1.0)
    trainer = Seq2SeqTrainer(model, spy, seed=0)
    total, figures = trainer.compute_losses(
        token_ids, segment_ids, training=True
    )
    np.testing.assert_array_equal(np.asarray(spy.seen.token_ids), token_ids)
    inputs = np.asarray(spy.seen.inputs)
    assert (inputs != token_ids).any()
    probas = np.asarray(model([inputs, segment_ids]), "float64")
    expected = numpy_loss(probas, token_ids, segment_ids)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    assert figures == {}


def cross_entropy_numpy(model, token_ids, segment_ids):
    """The target loss of the model's probabilities, summed in float64."""
    probas = np.asarray(
        model.predict_on_batch([token_ids, segment_ids]), "float64"
    )[:, :-1]
    picked = np.take_along_axis(probas, token_ids[:, 1:, None], -1)[..., 0]
    mask = segment_ids[:, 1:]
    return -(np.log(picked) * mask).sum() / mask.sum()


def finite_difference_gradient(
    model, variable, token_ids, segment_ids, step=2e-3
):
    """d CE / d E entry by entry, by central differences.

    Only forward passes of the model: nothing of the trainer's gradient
    code is used. The caller's weights are large enough (std 0.5) that
    layer norms are not steep, so float32 passes give ~1e-4 accuracy.
    """
    original = ops.convert_to_numpy(variable)
    grad = np.zeros(original.shape)
    for index in np.ndindex(*original.shape):
        values = []
        for sign in (1, -1):
            moved = original.copy()
            moved[index] += sign * step
            variable.assign(moved)
            values.append(cross_entropy_numpy(model, token_ids, segment_ids))
        grad[index] = (values[0] - values[1]) / (2 * step)
    variable.assign(original)
    return grad


@pytest.mark.parametrize("seed", [0, 1])
def test_gp_equals_squared_finite_difference_gradient(seed):
    model = tiny_model(seed, initializer_range=0.5, **NO_DROPOUT)
    token_ids, segment_ids = mixed_batch()
    trainer = Seq2SeqTrainer(model, "gp", epsilon=0.5)
    total, figures = trainer.compute_losses(
        token_ids, segment_ids, training=True
    )
    expected = finite_difference_gradient(
        model, trainer.embeddings, token_ids, segment_ids
    )
    batch = Batch(
        *(ops.convert_to_tensor(x) for x in (token_ids, segment_ids, token_ids))
    )
    _, grad = trainer.value_and_grad(
        lambda: trainer.cross_entropy(batch), trainer.embeddings
    )
    np.testing.assert_allclose(np.asarray(grad), expected, atol=5e-4)
    np.testing.assert_allclose(
        float(figures["gp"]), 0.25 * (expected**2).sum(), rtol=2e-3
    )
    ce = cross_entropy_numpy(model, token_ids, segment_ids)
    np.testing.assert_allclose(
        float(total), ce + float(figures["gp"]), rtol=1e-5
    )


class RecordingSGD(keras.optimizers.SGD):
    """SGD that keeps the gradients of its last step.

    Run eagerly, both backends' train steps hand `apply` concrete
    gradients of the whole objective, all variables at once.
    """

    def apply(self, grads, trainable_variables=None):
        self.recorded = [ops.convert_to_numpy(g) for g in grads]
        return super().apply(grads, trainable_variables)


def step_gradients(model, strategy, **options):
    """Gradients of one eager train step of `strategy`, weights unchanged
    (learning rate 0)."""
    trainer = Seq2SeqTrainer(model, strategy, seed=0, **options)
    optimizer = RecordingSGD(0.0)
    trainer.compile(optimizer=optimizer, run_eagerly=True)
    # Unshuffled: the mean over the batch's tokens is summed in one order.
    trainer.fit(
        x=mixed_batch(), batch_size=8, epochs=1, shuffle=False, verbose=0
    )
    return optimizer.recorded


def training_loss(model, strategy, batch=None, **options):
    """(objective, figures) of one batch as a train step computes them."""
    trainer = Seq2SeqTrainer(model, strategy, seed=0, **options)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    return trainer.compute_losses(*(batch or mixed_batch()), training=True)


def assert_baseline(model, strategy, exact=True, **options):
    """Same objective and gradients as `baseline` on the same weights:
    bit for bit, or up to float32 rounding (`exact=False`)."""

    def check(got, want):
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)

    total, figures = training_loss(model, strategy, **options)
    expected, _ = training_loss(model, "baseline")
    check(ops.convert_to_numpy(total), ops.convert_to_numpy(expected))
    baseline = step_gradients(model, "baseline")
    for got, want in zip(step_gradients(model, strategy, **options), baseline):
        check(got, want)
    return figures


def shift_into_targets(inputs, previous, token_ids, segment_ids):
    """Target position t gets previous[t - 1], one position at a time."""
    fed = np.array(inputs)
    for row, t in zip(*np.nonzero((segment_ids == 1) & (token_ids != 0))):
        fed[row, t] = previous[row, t - 1]
    return fed


def softmax(logits, axis=-1):
    logits = np.asarray(logits, "float64")
    shifted = np.exp(logits - logits.max(axis, keepdims=True))
    return shifted / shifted.sum(axis, keepdims=True)


# TeaForN ------------------------------------------------------------------


def test_teaforn_options():
    strategy = strategies.get("teaforn")
    assert (strategy.n, strategy.weights, strategy.feed) == (
        2,
        (1.0, 1.0),
        "hidden",
    )
    # The CLI hands lists over as strings and single values as numbers.
    assert strategies.get("teaforn", weights="1,0.5").weights == (1.0, 0.5)
    assert strategies.get("teaforn", n=1, weights=2).weights == (2.0,)
    strategy = strategies.get("teaforn", n=3, feed="topk", topk=2.0)
    assert strategy.metric_names == ("ce_1", "ce_2", "ce_3")
    assert strategy.topk == 2 and strategy.weights == (1.0, 1.0, 1.0)
    for bad in (
        dict(weights="1"),
        dict(weights="1,x"),
        dict(weights=(1, -1)),
        dict(weights=(0, 0)),
        dict(n=0),
        dict(feed="logits"),
        dict(topk=0),
    ):
        with pytest.raises(ValueError):
            strategies.get("teaforn", **bad)


def test_teaforn_with_one_pass_is_exactly_baseline():
    model = tiny_model(**NO_DROPOUT)
    figures = assert_baseline(model, "teaforn", n=1)
    assert set(figures) == {"ce_1"}


def hand_built_passes(network, token_ids, segment_ids, n, feed, topk):
    """Cross-entropy of each pass, feeding pass k into pass k + 1 by hand:
    NumPy shifting, top-k and renormalisation; the network only runs
    forward passes."""
    embedded = np.asarray(network["Embedding-Token"](token_ids))
    table = ops.convert_to_numpy(network["Embedding-Token"].embeddings)
    fed, losses = None, []
    for _ in range(n):
        hidden = network(
            token_ids, segment_ids, token_embeddings=fed, output="hidden"
        )
        logits = np.asarray(network.mlm_logits(hidden), "float64")
        probas = softmax(logits)
        losses.append(numpy_loss(probas, token_ids, segment_ids))
        if feed == "hidden":
            vectors = np.asarray(hidden)
        else:
            top = np.argsort(-probas, axis=-1)[..., :topk]
            weights = np.take_along_axis(probas, top, axis=-1)
            weights /= weights.sum(-1, keepdims=True)
            vectors = np.einsum("blk,blkh->blh", weights, table[top])
        fed = shift_into_targets(embedded, vectors, token_ids, segment_ids)
        fed = fed.astype("float32")
    return losses


@pytest.mark.parametrize(
    "options",
    [
        dict(n=2),
        dict(n=2, weights="1,0.5", feed="topk", topk=3),
        dict(n=3, weights=(0.5, 0.3, 0.2)),
    ],
)
def test_teaforn_passes_match_a_hand_built_computation(options):
    model = tiny_model(**NO_DROPOUT)
    strategy = strategies.get("teaforn", **options)
    token_ids, segment_ids = mixed_batch()
    total, figures = training_loss(model, strategy)
    expected = hand_built_passes(
        BertNetwork.from_model(model),
        token_ids,
        segment_ids,
        strategy.n,
        strategy.feed,
        strategy.topk,
    )
    got = [float(figures[f"ce_{k}"]) for k in range(1, strategy.n + 1)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The passes differ: pass 2 really reads pass 1's outputs.
    assert abs(got[1] - got[0]) > 1e-3
    np.testing.assert_allclose(
        float(total), np.dot(strategy.weights, expected), rtol=1e-5
    )


def test_teaforn_inference_does_not_depend_on_n():
    """N passes share the model's weights and only change training."""
    model = tiny_model(**NO_DROPOUT)
    token_ids, segment_ids = mixed_batch()
    outputs, losses = [], []
    for n in (1, 2, 3):
        trainer = Seq2SeqTrainer(model, "teaforn", n=n)
        assert [id(v) for v in trainer.trainable_variables] == [
            id(v) for v in model.trainable_variables
        ]
        outputs.append(np.asarray(trainer([token_ids, segment_ids])))
        loss, figures = trainer.compute_losses(
            token_ids, segment_ids, training=False
        )
        assert figures == {}
        losses.append(float(loss))
    for got in outputs[1:]:
        np.testing.assert_array_equal(got, outputs[0])
    np.testing.assert_array_equal(
        outputs[0], np.asarray(model([token_ids, segment_ids]))
    )
    assert losses == [losses[0]] * 3


# Scheduled sampling -------------------------------------------------------


SCHEDULE_STEPS = (0, 1, 100, 2_000, 10_000, 30_000, 200_000)


@pytest.mark.parametrize(
    "schedule, options, formula",
    [
        (
            "linear",
            dict(c=1e-4, epsilon_min=0.3),
            lambda i: 1 - max(0.3, 1 - 1e-4 * i),
        ),
        ("exponential", dict(decay=0.9995), lambda i: 1 - 0.9995**i),
        (
            "inverse_sigmoid",
            dict(k=500.0),
            lambda i: 1 - 500 / (500 + math.exp(min(i / 500, 700))),
        ),
        ("constant", dict(rate=0.35), lambda i: 0.35),
        (
            "exponential",
            dict(decay=0.999, max_rate=0.25),
            lambda i: min(1 - 0.999**i, 0.25),
        ),
    ],
)
def test_schedule_values_match_their_formulas(schedule, options, formula):
    for step in SCHEDULE_STEPS:
        got = float(strategies.sampling_rate(step, schedule, **options))
        assert got == pytest.approx(formula(step), rel=1e-5, abs=1e-6), step
    # The strategy passes its own fields to the same function.
    strategy = strategies.get("scheduled", schedule=schedule, **options)
    assert float(strategy.rate_at(2_000)) == pytest.approx(
        formula(2_000), rel=1e-5, abs=1e-6
    )


def test_schedule_defaults():
    """Linear by default: 0 at step 0, 0.5 from step 10,000 on."""
    strategy = strategies.get("scheduled")
    rates = [float(strategy.rate_at(i)) for i in (0, 5_000, 10_000, 10**6)]
    np.testing.assert_allclose(rates, [0, 0.25, 0.5, 0.5], atol=1e-6)


def test_scheduled_options_are_checked():
    for bad in (
        dict(schedule="cosine"),
        dict(mix="gumbel"),
        dict(decay=1.0),
        dict(k=0.5),
        dict(c=-1.0),
        dict(epsilon_min=1.5),
        dict(rate=2),
        dict(max_rate=-0.1),
        dict(temperature=0),
    ):
        with pytest.raises(ValueError):
            strategies.get("scheduled", **bad)


@pytest.mark.parametrize("mix", ["argmax", "sample", "soft"])
def test_scheduled_with_p0_is_baseline(mix):
    model = tiny_model(**NO_DROPOUT)
    figures = assert_baseline(
        model, "scheduled", schedule="constant", rate=0.0, mix=mix
    )
    assert float(figures["sampling_rate"]) == 0.0


def test_scheduled_rate_follows_the_optimizer_step():
    trainer = Seq2SeqTrainer(
        tiny_model(**NO_DROPOUT), "scheduled", c=1e-4, epsilon_min=0.2
    )
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    trainer.optimizer.iterations.assign(3_000)
    _, figures = trainer.compute_losses(*mixed_batch(), training=True)
    assert float(figures["sampling_rate"]) == pytest.approx(0.3, rel=1e-6)


class SpyScheduled(strategies.ScheduledSampling):
    """Scheduled sampling that keeps what its second pass read."""

    def second_pass_inputs(self, network, batch, chosen, seed_generator):
        self.seen = super().second_pass_inputs(
            network, batch, chosen, seed_generator
        )
        return self.seen


def scheduled_at_p1(mix, temperature=1.0, token_ids=None, segment_ids=None):
    """Every target input replaced (p = 1): the second pass's inputs, the
    loss, and the first pass's logits at temperature 1."""
    if token_ids is None:
        token_ids, segment_ids = mixed_batch()
    model = tiny_model(**NO_DROPOUT)
    spy = SpyScheduled(
        schedule="constant", rate=1.0, mix=mix, temperature=temperature
    )
    total, _ = training_loss(model, spy, (token_ids, segment_ids))
    logits = np.asarray(
        BertNetwork.from_model(model)(token_ids, segment_ids, output="logits")
    )
    return model, spy.seen, float(total), logits


def test_scheduled_with_p1_feeds_every_target_the_argmax():
    token_ids, segment_ids = mixed_batch()
    model, (inputs, embeddings), total, logits = scheduled_at_p1("argmax")
    assert embeddings is None
    expected = shift_into_targets(
        token_ids, logits.argmax(-1), token_ids, segment_ids
    )
    np.testing.assert_array_equal(np.asarray(inputs), expected)
    assert (expected != token_ids).any()
    # Labels stay gold: the loss scores these inputs against token_ids.
    probas = np.asarray(model([expected, segment_ids]), "float64")
    np.testing.assert_allclose(
        total, numpy_loss(probas, token_ids, segment_ids), rtol=1e-5
    )


def test_scheduled_with_p1_feeds_every_target_a_soft_mix():
    token_ids, segment_ids = mixed_batch()
    model, (inputs, embeddings), total, logits = scheduled_at_p1(
        "soft", temperature=0.5
    )
    np.testing.assert_array_equal(np.asarray(inputs), token_ids)
    network = BertNetwork.from_model(model)
    table = ops.convert_to_numpy(network["Embedding-Token"].embeddings)
    mixed = softmax(logits / 0.5) @ table
    expected = shift_into_targets(
        table[token_ids], mixed, token_ids, segment_ids
    )
    np.testing.assert_allclose(np.asarray(embeddings), expected, atol=1e-6)
    logits = network(
        token_ids,
        segment_ids,
        token_embeddings=expected.astype("float32"),
        output="logits",
    )
    expected_loss = numpy_loss(softmax(logits), token_ids, segment_ids)
    np.testing.assert_allclose(total, expected_loss, rtol=1e-5)


def test_scheduled_with_p1_samples_every_target_from_the_model():
    """Many copies of the batch: at each target position the fed tokens
    follow softmax(logits / T) of the position before, within 5 sigma."""
    token_ids, segment_ids = mixed_batch()
    copies = 400
    tiled = np.tile(token_ids, (copies, 1)), np.tile(segment_ids, (copies, 1))
    _, (inputs, _), _, logits = scheduled_at_p1("sample", 2.0, *tiled)
    inputs = np.asarray(inputs).reshape(copies, *token_ids.shape)
    probas = softmax(logits / 2.0)
    target = (segment_ids == 1) & (token_ids != 0)
    np.testing.assert_array_equal(
        inputs[:, ~target],
        np.broadcast_to(token_ids[~target], (copies, (~target).sum())),
    )
    for row, t in zip(*np.nonzero(target)):
        counts = np.bincount(inputs[:, row, t], minlength=VOCAB) / copies
        p = probas[row, t - 1]
        assert np.all(
            np.abs(counts - p) < 5 * np.sqrt(p * (1 - p) / copies) + 1e-9
        )


# FGM ----------------------------------------------------------------------


def test_fgm_options():
    assert strategies.get("fgm").epsilon == 0.5
    assert strategies.get("fgm").metric_names == ("adv_ce", "delta_norm")
    with pytest.raises(ValueError, match="epsilon"):
        strategies.get("fgm", epsilon=-1.0)


def test_fgm_with_zero_epsilon_is_baseline():
    model = tiny_model(**NO_DROPOUT)
    # Not bit-exact: E's gradient sums the clean and the perturbed pass's
    # halves in another order than the baseline's single pass.
    figures = assert_baseline(model, "fgm", exact=False, epsilon=0.0)
    assert float(figures["delta_norm"]) == 0.0


FGM_EPSILON, FGM_LEARNING_RATE = 0.5, 0.5


@pytest.fixture(scope="module")
def fgm_steps():
    """Two compiled FGM steps on the same trainer: learning rate 0 (the
    update is zero), then FGM_LEARNING_RATE. Weights after each."""
    model = tiny_model(**NO_DROPOUT)
    weights = model.trainable_variables
    initial = [ops.convert_to_numpy(w) for w in weights]
    trainer = Seq2SeqTrainer(model, "fgm", seed=0, epsilon=FGM_EPSILON)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    fit = dict(x=mixed_batch(), batch_size=8, shuffle=False, verbose=0)
    logs = trainer.fit(**fit).history
    after_zero = [ops.convert_to_numpy(w) for w in weights]
    trainer.optimizer.learning_rate.assign(FGM_LEARNING_RATE)
    trainer.fit(**fit)
    after_step = [ops.convert_to_numpy(w) for w in weights]
    return initial, after_zero, after_step, logs


def embeddings_index(model):
    """Where E sits among the trainable variables (and the gradients)."""
    embeddings = BertNetwork.from_model(model)["Embedding-Token"].embeddings
    return [id(v) for v in model.trainable_variables].index(id(embeddings))


def test_fgm_restores_embeddings_bit_for_bit(fgm_steps):
    initial, after_zero, _, logs = fgm_steps
    index = embeddings_index(tiny_model())
    np.testing.assert_array_equal(after_zero[index], initial[index])
    for got, want in zip(after_zero, initial):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(logs["delta_norm"], [FGM_EPSILON], rtol=1e-6)


def test_fgm_step_matches_explicit_reimplementation(fgm_steps):
    """By hand: δ from the baseline gradient of E, the baseline gradients
    at E and at E + δ (written into E), SGD on their mean."""
    initial, _, after_step, _ = fgm_steps
    model = tiny_model(**NO_DROPOUT)
    for variable, value in zip(model.trainable_variables, initial):
        variable.assign(value)
    index = embeddings_index(model)
    embeddings = model.trainable_variables[index]
    clean = step_gradients(model, "baseline")
    delta = FGM_EPSILON * clean[index] / (np.linalg.norm(clean[index]) + 1e-8)
    embeddings.assign(initial[index] + delta)
    adversarial = step_gradients(model, "baseline")
    expected = [
        w - FGM_LEARNING_RATE * 0.5 * (a + b)
        for w, a, b in zip(initial, clean, adversarial)
    ]
    for got, want in zip(after_step, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# PGD ----------------------------------------------------------------------


def test_pgd_options():
    strategy = strategies.get("pgd")
    assert (strategy.steps, strategy.alpha, strategy.epsilon) == (3, 0.3, 1.0)
    assert (strategy.norm, strategy.average) == ("matrix", False)
    assert strategies.get("pgd", average=1, steps=2.0).average is True
    assert strategies.get("pgd", epsilon=float("inf")).epsilon == math.inf
    for bad in (
        dict(steps=0),
        dict(alpha=0),
        dict(epsilon=-1),
        dict(norm="inf"),
        dict(average="yes"),
    ):
        with pytest.raises(ValueError):
            strategies.get("pgd", **bad)


class SpyPGD(strategies.PGD):
    """PGD that keeps every δ_k of its last loss."""

    def ascend(self, delta, grad):
        delta = super().ascend(delta, grad)
        self.deltas.append(ops.convert_to_numpy(delta))
        return delta

    def loss(self, trainer, batch):
        self.deltas = []
        return super().loss(trainer, batch)


@pytest.mark.slow
def test_pgd_with_one_step_and_no_projection_is_fgm():
    """K = 1, ε = inf: δ = α·g/‖g‖ with g the baseline gradient of E, and
    objective, figures and gradients those of `fgm` with ε = α."""
    model = tiny_model(**NO_DROPOUT)
    options = dict(steps=1, alpha=0.5, epsilon=math.inf)
    spy = SpyPGD(**options)
    total, figures = training_loss(model, spy)
    (delta,) = spy.deltas
    index = embeddings_index(model)
    clean = step_gradients(model, "baseline")[index]
    expected = 0.5 * clean / (np.linalg.norm(clean) + 1e-8)
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-9)
    fgm_total, fgm_figures = training_loss(model, "fgm", epsilon=0.5)
    np.testing.assert_allclose(float(total), float(fgm_total), rtol=1e-6)
    for name in ("adv_ce", "delta_norm"):
        np.testing.assert_allclose(
            float(figures[name]), float(fgm_figures[name]), rtol=1e-6
        )
    fgm = step_gradients(model, "fgm", epsilon=0.5)
    for got, want in zip(step_gradients(model, "pgd", **options), fgm):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def assign_embeddings(model, value):
    BertNetwork.from_model(model)["Embedding-Token"].embeddings.assign(value)


@pytest.mark.parametrize(
    "norm", ["matrix", pytest.param("row", marks=pytest.mark.slow)]
)
def test_pgd_never_leaves_the_epsilon_ball(norm):
    """Steps twice the radius: every δ_k is projected back, onto the
    sphere; `average=True` scores the mean CE over the δ_k, by hand."""
    epsilon = 0.05
    model = tiny_model(initializer_range=0.5, **NO_DROPOUT)
    spy = SpyPGD(steps=4, alpha=0.1, epsilon=epsilon, norm=norm, average=1)
    total, figures = training_loss(model, spy)
    assert len(spy.deltas) == 4
    for delta in spy.deltas:
        norms = (
            np.linalg.norm(delta, axis=-1)
            if norm == "row"
            else np.linalg.norm(delta)
        )
        assert np.max(norms) <= epsilon * (1 + 1e-5)
        assert np.max(norms) >= epsilon * (1 - 1e-5)
    assert not np.allclose(spy.deltas[0], spy.deltas[-1])
    token_ids, segment_ids = mixed_batch()
    embeddings = BertNetwork.from_model(model)["Embedding-Token"].embeddings
    original = ops.convert_to_numpy(embeddings)
    perturbed = []
    for delta in spy.deltas:
        assign_embeddings(model, original + delta)
        perturbed.append(cross_entropy_numpy(model, token_ids, segment_ids))
    assign_embeddings(model, original)
    clean = cross_entropy_numpy(model, token_ids, segment_ids)
    np.testing.assert_allclose(
        float(figures["adv_ce"]), np.mean(perturbed), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(total), 0.5 * (clean + np.mean(perturbed)), rtol=1e-5
    )
    np.testing.assert_allclose(float(figures["delta_norm"]), epsilon, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(), dict(norm="row", average=1)])
def test_pgd_restores_embeddings_bit_for_bit(options):
    """A compiled step at learning rate 0 leaves every weight as it was."""
    model = tiny_model(**NO_DROPOUT)
    initial = [ops.convert_to_numpy(w) for w in model.trainable_variables]
    trainer = Seq2SeqTrainer(model, "pgd", seed=0, **options)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = trainer.fit(
        x=mixed_batch(), batch_size=8, shuffle=False, verbose=0
    ).history
    assert logs["delta_norm"][0] > 0
    for got, want in zip(model.trainable_variables, initial):
        np.testing.assert_array_equal(ops.convert_to_numpy(got), want)


# VAT ----------------------------------------------------------------------


def test_vat_options():
    strategy = strategies.get("vat")
    assert strategy.metric_names == ("ce", "vat_kl")
    assert strategy.power_iterations == 1
    for bad in (
        dict(epsilon=0),
        dict(xi=-1),
        dict(weight=-0.5),
        dict(power_iterations=0),
    ):
        with pytest.raises(ValueError):
            strategies.get("vat", **bad)


def divergence_at(trainer, strategy, batch, clean, perturbation):
    embeddings = trainer.embeddings
    with trainer.overridden(embeddings, embeddings + perturbation):
        return float(strategy.divergence(trainer, batch, clean))


@pytest.mark.slow
def test_vat_direction_beats_random_directions_of_the_same_norm():
    model = tiny_model(initializer_range=0.5, **NO_DROPOUT)
    trainer = Seq2SeqTrainer(model, "vat", seed=0)
    strategy = trainer.strategy
    batch = Batch(
        *(ops.convert_to_tensor(x) for x in (*mixed_batch(), mixed_batch()[0]))
    )
    clean = ops.stop_gradient(trainer.target_logits(batch, training=False)[0])
    direction = strategy.adversarial_direction(trainer, batch, clean)
    assert float(ops.sqrt(ops.sum(ops.square(direction)))) == pytest.approx(
        1.0, rel=1e-5
    )
    radius = 0.3
    adversarial = divergence_at(
        trainer, strategy, batch, clean, radius * direction
    )
    rng = np.random.default_rng(0)
    shape = tuple(trainer.embeddings.shape)
    randoms = []
    for _ in range(20):
        noise = rng.normal(size=shape)
        noise = (radius * noise / np.linalg.norm(noise)).astype("float32")
        randoms.append(divergence_at(trainer, strategy, batch, clean, noise))
    assert adversarial > 3 * max(randoms) > 0


def test_vat_with_zero_weight_is_baseline():
    model = tiny_model(**NO_DROPOUT)
    total, figures = training_loss(model, "vat", weight=0.0)
    expected, _ = training_loss(model, "baseline")
    np.testing.assert_array_equal(float(total), float(expected))
    np.testing.assert_array_equal(float(figures["ce"]), float(expected))
    assert float(figures["vat_kl"]) > 0


@pytest.mark.slow
def test_vat_with_zero_weight_steps_as_baseline():
    assert_baseline(tiny_model(**NO_DROPOUT), "vat", exact=False, weight=0.0)


def test_vat_kl_is_the_objective_beyond_the_cross_entropy():
    model = tiny_model(initializer_range=0.5, **NO_DROPOUT)
    total, figures = training_loss(model, "vat", weight=2.5)
    np.testing.assert_allclose(
        float(total),
        float(figures["ce"]) + 2.5 * float(figures["vat_kl"]),
        rtol=1e-6,
    )
    assert float(figures["vat_kl"]) > 0


# R-Drop -------------------------------------------------------------------


def dropout_states(model):
    """The dropout layers' seed states: restoring them repeats the draws."""
    return [ops.convert_to_numpy(v) for v in model.non_trainable_variables]


def restore_states(model, states):
    for variable, value in zip(model.non_trainable_variables, states):
        variable.assign(value)


@pytest.mark.slow
def test_rdrop_with_zero_alpha_is_baseline_with_the_same_dropout_draws():
    model = tiny_model()
    assert model.bert_config.hidden_dropout_prob > 0
    states = dropout_states(model)
    total, figures = training_loss(model, "rdrop", alpha=0.0)
    restore_states(model, states)
    first, _ = training_loss(model, "baseline")
    second, _ = training_loss(model, "baseline")
    first, second = float(first), float(second)
    assert first != second  # two dropout draws
    np.testing.assert_allclose(float(total), 0.5 * (first + second), rtol=1e-6)
    np.testing.assert_allclose(float(figures["ce"]), float(total), rtol=1e-6)
    assert float(figures["rdrop_kl"]) > 0


def test_rdrop_kl_is_zero_without_dropout():
    model = tiny_model(**NO_DROPOUT)
    total, figures = training_loss(model, "rdrop", alpha=1.0)
    assert float(figures["rdrop_kl"]) == 0.0
    expected, _ = training_loss(model, "baseline")
    np.testing.assert_array_equal(float(total), float(expected))


@pytest.mark.slow
def test_rdrop_without_dropout_steps_as_baseline():
    assert_baseline(tiny_model(**NO_DROPOUT), "rdrop", exact=False, alpha=1.0)


def test_rdrop_objective_by_hand():
    model = tiny_model()
    total, figures = training_loss(model, "rdrop", alpha=3.0)
    np.testing.assert_allclose(
        float(total),
        float(figures["ce"]) + 1.5 * float(figures["rdrop_kl"]),
        rtol=1e-6,
    )


def test_new_strategies_options_are_checked():
    with pytest.raises(ValueError):
        strategies.get("rdrop", alpha=-1)


# Compiled fits of the options the module fixtures of test_trainer.py leave
# out: the step counter read inside tf.function / jax.jit, and the top-k,
# soft and sampled inputs traced there.


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options",
    [
        ("teaforn", dict(n=3, weights="1,0.5,0.25", feed="topk", topk=3)),
        ("scheduled", dict(schedule="inverse_sigmoid", k=2.0, mix="soft")),
        ("scheduled", dict(schedule="exponential", decay=0.5, mix="sample")),
    ],
)
def test_options_fit_compiled(name, options):
    trainer = Seq2SeqTrainer(tiny_model(), name, seed=0, **options)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = trainer.fit(
        x=mixed_batch(), batch_size=8, epochs=3, verbose=0
    ).history
    assert set(history) == {"loss", *trainer.strategy.metric_names}
    assert all(np.all(np.isfinite(values)) for values in history.values())
    if name == "scheduled":
        # One step per epoch: epoch e logs p at step e - 1.
        expected = [float(trainer.strategy.rate_at(step)) for step in range(3)]
        np.testing.assert_allclose(
            history["sampling_rate"], expected, rtol=1e-6
        )
        assert len(set(expected)) == 3
