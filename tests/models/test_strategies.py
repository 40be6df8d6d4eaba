"""Strategies: registry, replacement statistics, the gradient penalty
against finite differences, and the TeaForN / scheduled / FGM hooks."""

import keras
import numpy as np
import pytest
from keras import ops

from models import strategies
from models.trainer import Batch
from models.trainer import Seq2SeqTrainer
from tests.models.test_trainer import NO_DROPOUT
from tests.models.test_trainer import mixed_batch
from tests.models.test_trainer import numpy_loss
from tests.models.test_trainer import tiny_model


def test_registry_names_and_options():
    assert {"baseline", "replace", "gp"} <= set(strategies.STRATEGIES)
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


def eager_trainer(strategy, **options):
    """A compiled trainer on a dropout-free tiny model, for eager checks."""
    trainer = Seq2SeqTrainer(
        tiny_model(**NO_DROPOUT), strategy, seed=0, **options
    )
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    return trainer


def baseline_loss(model, token_ids, segment_ids):
    probas = np.asarray(model([token_ids, segment_ids]), "float64")
    return numpy_loss(probas, token_ids, segment_ids)


def shift_into_targets(inputs, previous, token_ids, segment_ids):
    """Target position t gets previous[t - 1], one position at a time."""
    fed = np.array(inputs)
    for row, t in zip(*np.nonzero((segment_ids == 1) & (token_ids != 0))):
        fed[row, t] = previous[row, t - 1]
    return fed


@pytest.mark.parametrize("discount", [1.0, 0.5])
def test_teaforn_feeds_previous_hidden_states(discount):
    trainer = eager_trainer("teaforn", n=2, discount=discount)
    network, model = trainer.network, trainer.model
    token_ids, segment_ids = mixed_batch()
    total, figures = trainer.compute_losses(
        token_ids, segment_ids, training=True
    )
    assert set(figures) == {"ce_1", "ce_2"}
    np.testing.assert_allclose(
        float(figures["ce_1"]),
        baseline_loss(model, token_ids, segment_ids),
        rtol=1e-5,
    )
    hidden = np.asarray(network(token_ids, segment_ids, output="hidden"))
    embedded = np.asarray(network["Embedding-Token"](token_ids))
    fed = shift_into_targets(embedded, hidden, token_ids, segment_ids)
    logits = network(
        token_ids, segment_ids, token_embeddings=fed, output="logits"
    )
    probas = np.asarray(ops.softmax(logits), "float64")
    expected = numpy_loss(probas, token_ids, segment_ids)
    np.testing.assert_allclose(float(figures["ce_2"]), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(total),
        (float(figures["ce_1"]) + discount * expected) / (1 + discount),
        rtol=1e-5,
    )


def test_teaforn_with_one_pass_is_baseline():
    trainer = eager_trainer("teaforn", n=1)
    token_ids, segment_ids = mixed_batch()
    total, _ = trainer.compute_losses(token_ids, segment_ids, training=True)
    np.testing.assert_allclose(
        float(total),
        baseline_loss(trainer.model, token_ids, segment_ids),
        rtol=1e-5,
    )


def test_scheduled_rate_ramps_linearly():
    strategy = strategies.get("scheduled", rate=0.4, warmup_steps=100)
    rates = [float(strategy.rate_at(step)) for step in (0, 50, 100, 500)]
    np.testing.assert_allclose(rates, [0.0, 0.2, 0.4, 0.4], rtol=1e-6)
    constant = strategies.get("scheduled", rate=0.4, warmup_steps=0)
    assert float(constant.rate_at(0)) == pytest.approx(0.4)


@pytest.mark.parametrize("step", [0, 10])
def test_scheduled_feeds_greedy_predictions(step):
    """Rate 0 at step 0: teacher forcing. Rate 1 after the warm-up: every
    target input is the first pass's greedy guess; labels unchanged."""
    trainer = eager_trainer("scheduled", rate=1.0, warmup_steps=10)
    trainer.optimizer.iterations.assign(step)
    token_ids, segment_ids = mixed_batch()
    total, figures = trainer.compute_losses(
        token_ids, segment_ids, training=True
    )
    assert float(figures["sampling_rate"]) == step / 10
    inputs = token_ids
    if step:
        probas = np.asarray(trainer.model([token_ids, segment_ids]))
        inputs = shift_into_targets(
            token_ids, probas.argmax(-1), token_ids, segment_ids
        )
    probas = np.asarray(trainer.model([inputs, segment_ids]), "float64")
    expected = numpy_loss(probas, token_ids, segment_ids)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_fgm_scores_the_perturbed_embeddings_and_restores_them():
    trainer = eager_trainer("fgm", epsilon=0.5)
    model, embeddings = trainer.model, trainer.embeddings
    token_ids, segment_ids = mixed_batch()
    original = ops.convert_to_numpy(embeddings)
    batch = Batch(
        *(ops.convert_to_tensor(x) for x in (token_ids, segment_ids, token_ids))
    )
    _, grad = trainer.value_and_grad(
        lambda: trainer.cross_entropy(batch), embeddings
    )
    grad = np.asarray(grad)
    total, figures = trainer.compute_losses(
        token_ids, segment_ids, training=True
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(embeddings), original)
    embeddings.assign(original + 0.5 * grad / np.linalg.norm(grad))
    adversarial = baseline_loss(model, token_ids, segment_ids)
    embeddings.assign(original)
    np.testing.assert_allclose(float(figures["adv_ce"]), adversarial, rtol=1e-5)
    np.testing.assert_allclose(
        float(total),
        baseline_loss(model, token_ids, segment_ids) + adversarial,
        rtol=1e-5,
    )
