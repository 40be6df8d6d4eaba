"""Seq2SeqTrainer: the target-only loss, batch formats, fit() per strategy.

Compiled fits are the slow part of these tests, so each strategy is fitted
once (module fixtures `fitted`, `fitted_extras`) and several tests read its
results.
"""

import keras
import numpy as np
import pytest

from models import strategies
from models.losses import token_kl_divergence
from models.trainer import Seq2SeqTrainer
from models.trainer import seq2seq_cross_entropy
from models.trainer import token_cross_entropy
from models.trainer import unpack_batch
from tests.common import NO_DROPOUT
from tests.common import TINY_TRAINER
from tests.common import mixed_batch
from tests.common import numpy_loss
from tests.common import trainer_model as tiny_model

FIT_EPOCHS = 8
CORE = ("baseline", "replace", "gp")
EXTRAS = tuple(sorted(set(strategies.STRATEGIES) - set(CORE)))
VOCAB = TINY_TRAINER["vocab_size"]


def test_cross_entropy_matches_numpy_on_random_logits():
    token_ids, segment_ids = mixed_batch()
    logits = (
        np.random.default_rng(0).normal(size=token_ids.shape + (VOCAB,)) * 3
    )
    probas = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    loss = seq2seq_cross_entropy(token_ids, segment_ids, logits)
    expected = numpy_loss(probas, token_ids, segment_ids)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_padding_and_source_do_not_count():
    """Changing what a source or padding position predicts changes nothing."""
    token_ids, segment_ids = mixed_batch()
    logits = np.random.default_rng(1).normal(size=token_ids.shape + (VOCAB,))
    scored = np.zeros(token_ids.shape, bool)
    scored[:, :-1] = segment_ids[:, 1:] == 1
    noisy = np.where(scored[..., None], logits, logits * 50 + 7)
    np.testing.assert_allclose(
        float(seq2seq_cross_entropy(token_ids, segment_ids, logits)),
        float(seq2seq_cross_entropy(token_ids, segment_ids, noisy)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "data",
    [
        lambda t, s: (t, s),
        lambda t, s: ((t, s),),
        lambda t, s: ([t, s], None),
    ],
)
def test_unpack_batch_formats(data):
    token_ids, segment_ids = unpack_batch(data("T", "S"))
    assert (token_ids, segment_ids) == ("T", "S")


def test_unpack_batch_rejects_targets():
    with pytest.raises(ValueError, match="no targets"):
        unpack_batch((("T", "S"), "Y"))


def test_strategy_options_only_by_name():
    with pytest.raises(TypeError):
        Seq2SeqTrainer(tiny_model(), strategies.Baseline(), epsilon=1.0)


def fit_each(names):
    """Per strategy: weights after one SGD step, then a short fit's history.

    Same initial weights, batch and optimizer for every strategy, dropout
    off, so the first step differs only by the strategy.
    """
    token_ids, segment_ids = mixed_batch()
    initial = tiny_model(**NO_DROPOUT).get_weights()
    results = {}
    for name in names:
        model = tiny_model(**NO_DROPOUT)
        model.set_weights(initial)
        trainer = Seq2SeqTrainer(model, name, seed=0)
        seed_state = keras.ops.convert_to_numpy(trainer.seed_generator.state)
        trainer.compile(optimizer=keras.optimizers.SGD(0.3))
        # Keras hands x-only data to train_step as ((token_ids, ...),).
        data = (token_ids, segment_ids)
        trainer.fit(x=data, batch_size=8, epochs=1, verbose=0)
        after_one = [np.array(w) for w in model.get_weights()]
        history = trainer.fit(
            x=data, batch_size=8, epochs=FIT_EPOCHS, verbose=0
        ).history
        results[name] = {
            "initial": initial,
            "after_one": after_one,
            "history": history,
            "trainer": trainer,
            "seed_state": seed_state,
        }
    return results


@pytest.fixture(scope="module")
def fitted():
    return fit_each(CORE)


@pytest.fixture(scope="module")
def fitted_extras():
    return fit_each(EXTRAS)


def each_strategy():
    """The core strategies, then the others marked `slow`: each compiled
    step costs ~5-10 s on JAX/CPU, and the others' hooks are also checked
    eagerly in test_strategies.py."""
    extras = [pytest.param(name, marks=pytest.mark.slow) for name in EXTRAS]
    return [*CORE, *extras]


def fit_result(request, name):
    fixture = "fitted" if name in CORE else "fitted_extras"
    return request.getfixturevalue(fixture)[name]


@pytest.mark.parametrize("name", each_strategy())
def test_fit_runs_and_logs_figures(request, name):
    history = fit_result(request, name)["history"]
    expected = {"loss", *strategies.get(name).metric_names}
    assert set(history) == expected
    for values in history.values():
        assert len(values) == FIT_EPOCHS
        assert np.all(np.isfinite(values))


@pytest.mark.parametrize("name", each_strategy())
def test_fit_updates_weights(request, name):
    result = fit_result(request, name)
    moved = [
        not np.allclose(a, b)
        for a, b in zip(result["initial"], result["after_one"])
    ]
    assert any(moved)


def test_compiled_steps_advance_the_trainer_seed(fitted):
    """Fresh corruption every step, also on JAX where the seed is state
    returned by a pure step."""
    trainer = fitted["replace"]["trainer"]
    now = keras.ops.convert_to_numpy(trainer.seed_generator.state)
    assert (now != fitted["replace"]["seed_state"]).any()


def test_baseline_overfits_one_batch(fitted):
    losses = fitted["baseline"]["history"]["loss"]
    assert losses[-1] < losses[0] - 0.5


def test_evaluate_loss_matches_numpy(fitted):
    """Through the model and test_step: the hand computation on the model's
    own probabilities, for a strategy that trains with more than the loss."""
    trainer = fitted["gp"]["trainer"]
    token_ids, segment_ids = mixed_batch()
    probas = np.asarray(trainer.model([token_ids, segment_ids]), "float64")
    expected = numpy_loss(probas, token_ids, segment_ids)
    # x=token_ids, y=segment_ids: the flat (token_ids, segment_ids) form.
    logs = trainer.evaluate(
        x=token_ids, y=segment_ids, batch_size=8, verbose=0, return_dict=True
    )
    assert set(logs) == {"loss"}
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)


def test_save_weights_are_the_models(fitted, tmp_path):
    trainer = fitted["baseline"]["trainer"]
    path = str(tmp_path / "unilm.weights.h5")
    trainer.save_weights(path)
    fresh = tiny_model(seed=5)
    fresh.load_weights(path)
    for a, b in zip(fresh.get_weights(), trainer.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_gp_steps_differently_from_baseline(fitted):
    """The penalty's gradient (a second derivative) reaches the weights."""
    baseline = fitted["baseline"]["after_one"]
    penalised = fitted["gp"]["after_one"]
    gaps = [np.abs(a - b).max() for a, b in zip(baseline, penalised)]
    assert max(gaps) > 1e-4


# Label smoothing, KL, weight averaging ------------------------------------


def smoothed_numpy(logits, labels, mask, epsilon):
    """-Σ_v q_v·log p_v with q = (1 - ε)·onehot + ε/V, masked mean, float64."""
    logits = np.asarray(logits, "float64")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q = np.full(log_p.shape, epsilon / log_p.shape[-1])
    np.put_along_axis(
        q, labels[..., None], 1 - epsilon + epsilon / log_p.shape[-1], -1
    )
    per_token = -(q * log_p).sum(-1)
    return (per_token * mask).sum() / mask.sum()


def test_label_smoothing_loss_by_hand_and_as_keras():
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(3, 7, VOCAB)) * 3).astype("float32")
    labels = rng.integers(0, VOCAB, size=(3, 7))
    mask = (rng.random((3, 7)) < 0.6).astype("float32")
    got = float(token_cross_entropy(labels, logits, mask, 0.1))
    np.testing.assert_allclose(
        got, smoothed_numpy(logits, labels, mask, 0.1), rtol=1e-5
    )
    per_token = keras.losses.categorical_crossentropy(
        np.eye(VOCAB)[labels], logits, from_logits=True, label_smoothing=0.1
    )
    keras_mean = (np.asarray(per_token) * mask).sum() / mask.sum()
    np.testing.assert_allclose(got, keras_mean, rtol=1e-5)
    plain = float(token_cross_entropy(labels, logits, mask))
    np.testing.assert_allclose(
        plain, smoothed_numpy(logits, labels, mask, 0.0), rtol=1e-5
    )
    assert abs(got - plain) > 1e-2


@pytest.mark.slow
def test_label_smoothing_trains_smoothed_and_evaluates_plain():
    model = tiny_model(**NO_DROPOUT)
    token_ids, segment_ids = mixed_batch()
    trainer = Seq2SeqTrainer(model, "baseline", label_smoothing=0.2)
    train, _ = trainer.compute_losses(token_ids, segment_ids, training=True)
    valid, _ = trainer.compute_losses(token_ids, segment_ids, training=False)
    logits = np.asarray(
        trainer.network(token_ids, segment_ids, output="logits"), "float64"
    )
    expected = smoothed_numpy(
        logits[:, :-1], token_ids[:, 1:], segment_ids[:, 1:], 0.2
    )
    np.testing.assert_allclose(float(train), expected, rtol=1e-5)
    probas = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(
        float(valid), numpy_loss(probas, token_ids, segment_ids), rtol=1e-5
    )
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="label_smoothing"):
            Seq2SeqTrainer(model, label_smoothing=bad)


def test_kl_divergence_by_hand():
    rng = np.random.default_rng(3)
    p_logits, q_logits = rng.normal(size=(2, 2, 5, VOCAB)) * 2
    mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], "float32")
    p, q = np.exp(p_logits), np.exp(q_logits)
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)
    per_token = (p * np.log(p / q)).sum(-1)
    expected = (per_token * mask).sum() / mask.sum()
    got = token_kl_divergence(
        p_logits.astype("float32"), q_logits.astype("float32"), mask
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    same = token_kl_divergence(p_logits, p_logits, mask)
    assert float(same) == 0.0


EMA_DECAY, EMA_STEPS = 0.75, 3


def steps_one_by_one(use_ema):
    """Training weights after each of EMA_STEPS one-step fits (SGD), and
    the trainer."""
    model = tiny_model(**NO_DROPOUT)
    trainer = Seq2SeqTrainer(model, "baseline", seed=0)
    optimizer = keras.optimizers.SGD(
        0.5, use_ema=use_ema, ema_momentum=EMA_DECAY
    )
    trainer.compile(optimizer=optimizer)
    weights = []
    for _ in range(EMA_STEPS):
        trainer.fit(x=mixed_batch(), batch_size=8, shuffle=False, verbose=0)
        weights.append([np.array(w) for w in model.get_weights()])
    return weights, trainer


@pytest.mark.slow
def test_ema_weights_equal_a_hand_computed_average():
    """a_1 = w_1, a_k = m·a_(k-1) + (1 - m)·w_k over the weights w_k after
    step k; `fit` leaves the training weights, which follow the same steps
    as without averaging, and `averaged_weights` swaps a_N in and out."""
    weights, trainer = steps_one_by_one(use_ema=True)
    plain, _ = steps_one_by_one(use_ema=False)
    for with_ema, without in zip(weights, plain):
        for a, b in zip(with_ema, without):
            np.testing.assert_array_equal(a, b)
    average = weights[0]
    for step in weights[1:]:
        average = [
            EMA_DECAY * a + (1 - EMA_DECAY) * w for a, w in zip(average, step)
        ]
    model = trainer.model
    with trainer.averaged_weights():
        inside = [np.array(w) for w in model.get_weights()]
    for got, want in zip(inside, average):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    moved = [not np.allclose(a, w) for a, w in zip(average, weights[-1])]
    assert sum(moved) > len(moved) // 2  # the average is not the last step
    for got, want in zip(model.get_weights(), weights[-1]):
        np.testing.assert_array_equal(np.array(got), want)


def test_averaged_weights_without_ema_change_nothing():
    model = tiny_model(**NO_DROPOUT)
    trainer = Seq2SeqTrainer(model)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [np.array(w) for w in model.get_weights()]
    with trainer.averaged_weights():
        inside = [np.array(w) for w in model.get_weights()]
    for a, b in zip(before, inside):
        np.testing.assert_array_equal(a, b)
    assert not trainer.uses_ema
