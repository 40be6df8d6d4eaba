"""Professor forcing: the free run against step-by-step decoding, the
discriminator alone, where each loss's gradient goes, λ = 0 against the
baseline, `every`/`warmup`, and resuming the discriminator's state."""

import keras
import numpy as np
import pytest
from keras import ops

from models import backend
from models import strategies
from models.bert import BertNetwork
from models.professor import Adversary
from models.professor import discriminator_loss
from models.professor import free_run_inputs
from models.professor import generator_loss
from models.professor import title_positions
from models.trainer import Seq2SeqTrainer
from tasks.lib.rundir import RunDirectory
from tests.common import NO_DROPOUT
from tests.common import mixed_batch
from tests.common import trainer_model as tiny_model


def test_options_are_checked():
    strategy = strategies.get("professor")
    assert (strategy.adversarial_weight, strategy.free_run) == (1.0, "greedy")
    assert (strategy.every, strategy.warmup) == (1, 0)
    assert strategies.get("professor", every=2.0, warmup=3.0).every == 2
    bad = [
        {"adversarial_weight": -1.0},
        {"free_run": "beam"},
        {"every": 0},
        {"every": 1.5},
        {"warmup": -1},
        {"warmup": 0.5},
        {"discriminator_units": 0},
        {"discriminator_layers": 0},
        {"discriminator_lr": 0.0},
    ]
    for options in bad:
        with pytest.raises(ValueError, match=next(iter(options))):
            strategies.get("professor", **options)


def step_by_step_free_run(model, token_ids, segment_ids, uniforms=None):
    """The free run one row and one title token at a time, in NumPy.

    Each title position gets the argmax (or the inverse-CDF draw with the
    position's uniform) of the model's output one position back, the
    model reading the row alone, as written so far.
    """
    network = BertNetwork.from_model(model)
    inputs = np.array(token_ids)
    for row in range(len(inputs)):
        title = (segment_ids[row] == 1) & (token_ids[row] != 0)
        for position in np.flatnonzero(title):
            logits = network(
                inputs[row : row + 1],
                segment_ids[row : row + 1],
                output="logits",
            )
            logits = np.asarray(logits, "float64")[0, position - 1]
            if uniforms is None:
                inputs[row, position] = logits.argmax()
                continue
            probas = np.exp(logits - logits.max())
            cdf = np.cumsum(probas / probas.sum())
            drawn = np.searchsorted(cdf, uniforms[row, position])
            inputs[row, position] = min(drawn, len(cdf) - 1)
    return inputs


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_free_run_equals_step_by_step_decoding(mode):
    model = tiny_model(seed=3)
    token_ids, segment_ids = mixed_batch()
    uniforms = None
    if mode == "sample":
        uniforms = np.random.default_rng(0).uniform(size=token_ids.shape)
        uniforms = uniforms.astype("float32")
    network = BertNetwork.from_model(model)
    free = np.asarray(
        free_run_inputs(network, token_ids, segment_ids, uniforms)
    )
    expected = step_by_step_free_run(model, token_ids, segment_ids, uniforms)
    np.testing.assert_array_equal(free, expected)
    title = (segment_ids == 1) & (token_ids != 0)
    np.testing.assert_array_equal(free[~title], token_ids[~title])
    # The check can fail: the model's titles are not the references.
    assert (free[title] != token_ids[title]).any()


def test_every_k_under_data_parallelism_jax_only():
    """TensorFlow's replicas cannot synchronise within a run-time branch:
    a clear error at creation, not a failure deep in the first step."""
    from models.distribution import data_parallel

    model = tiny_model()
    with data_parallel():
        if keras.backend.backend() == "tensorflow":
            with pytest.raises(ValueError, match="every > 1 .* every=1"):
                Seq2SeqTrainer(model, "professor", every=2)
        else:
            Seq2SeqTrainer(model, "professor", every=2)
        Seq2SeqTrainer(model, "professor", every=1)


def separable_states(rows=24, length=10, hidden=8, seed=0):
    """Teacher-forced states with a positive first feature on the title,
    free-running ones with a negative one; noise everywhere else."""
    rng = np.random.default_rng(seed)
    title = np.zeros((rows, length), bool)
    for row in range(rows):
        start = rng.integers(1, length - 2)
        title[row, start : rng.integers(start + 1, length + 1)] = True
    teacher = rng.normal(size=(rows, length, hidden)).astype("float32")
    free = rng.normal(size=(rows, length, hidden)).astype("float32")
    teacher[..., 0] = np.abs(teacher[..., 0]) + 0.5
    free[..., 0] = -np.abs(free[..., 0]) - 0.5
    # Outside the title the two are alike: only the title tells them apart.
    free[~title] = teacher[~title]
    return teacher, free, title


def test_discriminator_reads_only_the_title():
    keras.utils.set_random_seed(0)
    adversary = Adversary(8, 16, 2, 1e-3)
    teacher, _, title = separable_states()
    noisy = np.where(title[..., None], teacher, teacher * 100 - 7)
    np.testing.assert_allclose(
        np.asarray(adversary(teacher, title)),
        np.asarray(adversary(noisy, title)),
        rtol=1e-5,
        atol=1e-6,
    )
    # A padding row (no title) counts in neither loss.
    empty = title.copy()
    empty[0] = False
    base = discriminator_loss(adversary, teacher, teacher, empty)[0]
    teacher[0] += 50.0
    moved = discriminator_loss(adversary, teacher, teacher, empty)[0]
    np.testing.assert_allclose(float(base), float(moved), rtol=1e-6)


def test_discriminator_loss_falls_when_trained_alone():
    keras.utils.set_random_seed(0)
    adversary = Adversary(8, 16, 2, 1e-2)
    teacher, free, title = separable_states()
    before = [np.array(v) for v in adversary.own_weights]

    def loss():
        return discriminator_loss(adversary, teacher, free, title)

    first, first_accuracy = loss()
    for _ in range(20):
        last, accuracy = adversary.train(loss, adversary.state_variables())
    last, accuracy = loss()
    assert float(first) > 0.5 and float(last) < 0.05 * float(first)
    assert float(accuracy) == 1.0 and float(first_accuracy) < 1.0
    assert int(adversary.own_optimizer.iterations) == 20
    after = [np.array(v) for v in adversary.own_weights]
    assert all(not np.allclose(a, b) for a, b in zip(before, after))


def professor_trainer(seed=0, optimizer=None, **options):
    """A professor trainer on the tiny model, dropout off."""
    model = tiny_model(seed=seed, **NO_DROPOUT)
    trainer = Seq2SeqTrainer(model, "professor", seed=0, **options)
    trainer.compile(optimizer=optimizer or keras.optimizers.SGD(0.3))
    return trainer


def gradient_norms(fn, variables, trainer):
    _, _, grads = backend.gradients(
        lambda: (fn(), None), variables, trainer.state_variables()
    )
    return [float(np.abs(np.asarray(g)).max()) for g in grads]


@pytest.mark.slow
def test_each_loss_reaches_only_its_own_weights():
    """C_f reaches the transformer; D's loss, as the step computes it
    (states held constant), reaches D and nothing of the model."""
    trainer = professor_trainer()
    token_ids, segment_ids = mixed_batch()
    adversary, network = trainer.strategy_state, trainer.network
    title = title_positions(token_ids, segment_ids)
    model_weights = trainer.model.trainable_variables
    transformer = [v for v in model_weights if "Transformer" in v.path]
    own = adversary.own_weights
    assert transformer and not {id(v) for v in own} & {
        id(v) for v in trainer.trainable_variables
    }
    # Token ids, without gradient (the loop is checked above): the passes
    # below are the strategy's free pass and teacher-forced pass.
    free_inputs = free_run_inputs(network, token_ids, segment_ids)

    def free_states():
        return network(free_inputs, segment_ids, training=True, output="hidden")

    def adversarial():
        return generator_loss(adversary, free_states(), title)

    assert min(gradient_norms(adversarial, transformer, trainer)) > 0.0

    def discriminator():
        teacher = network(
            token_ids, segment_ids, training=True, output="hidden"
        )
        teacher, free = (
            ops.stop_gradient(teacher),
            ops.stop_gradient(free_states()),
        )
        return discriminator_loss(adversary, teacher, free, title)[0]

    assert max(gradient_norms(discriminator, model_weights, trainer)) == 0.0
    assert min(gradient_norms(discriminator, own, trainer)) > 0.0


def numpy_values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def fit_steps(trainer, steps=1):
    token_ids, segment_ids = mixed_batch()
    return trainer.fit(
        x=(token_ids, segment_ids), batch_size=8, epochs=steps, verbose=0
    ).history


@pytest.fixture(scope="module")
def one_step():
    """Model and discriminator after one compiled SGD step, dropout on,
    from the same initial weights (the model's and D's) and batch."""
    model = tiny_model(seed=0)
    initial = model.get_weights()
    runs = {
        "baseline": ("baseline", {}),
        "lambda 0": ("professor", {"adversarial_weight": 0.0}),
        "lambda 1": ("professor", {"adversarial_weight": 1.0}),
        "warm-up": ("professor", {"adversarial_weight": 1.0, "warmup": 1}),
    }
    results, adversary_initial = {}, None
    for label, (name, options) in runs.items():
        model = tiny_model(seed=0)
        model.set_weights(initial)
        trainer = Seq2SeqTrainer(model, name, seed=0, **options)
        trainer.compile(optimizer=keras.optimizers.SGD(0.3))
        if name == "professor":
            if adversary_initial is None:
                adversary_initial = numpy_values(trainer.strategy_variables())
            for variable, value in zip(
                trainer.strategy_variables(), adversary_initial
            ):
                variable.assign(value)
        history = fit_steps(trainer)
        results[label] = {
            "model": [np.array(w) for w in model.get_weights()],
            "paths": [w.path for w in model.weights],
            "adversary": numpy_values(trainer.strategy_variables()),
            "own": len(getattr(trainer.strategy_state, "own_weights", [])),
            "history": history,
        }
    results["initial"] = {"model": initial, "adversary": adversary_initial}
    return results


def max_gap(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.slow
def test_lambda_zero_trains_exactly_like_baseline(one_step):
    baseline = one_step["baseline"]["model"]
    assert max_gap(baseline, one_step["initial"]["model"]) > 1e-3
    # Bit for bit on TensorFlow; on JAX within float32 rounding (~1e-8
    # seen), the compiler fusing the larger step differently.
    for label in ("lambda 0", "warm-up"):
        assert max_gap(one_step[label]["model"], baseline) < 1e-6, label
    history = one_step["lambda 0"]["history"]
    np.testing.assert_allclose(
        history["ce"], one_step["baseline"]["history"]["loss"], rtol=1e-6
    )
    assert history["loss"] == history["ce"]
    assert set(history) == {
        "loss",
        "ce",
        "adversarial",
        "disc_loss",
        "disc_accuracy",
    }


@pytest.mark.slow
def test_adversarial_gradient_moves_the_model_not_the_discriminator(one_step):
    """λ = 1 against λ = 0: C_f changes the transformer's step and leaves
    D's step as it is; D's own loss moved D in both."""
    with_term, without = one_step["lambda 1"], one_step["lambda 0"]
    gaps = [
        float(np.abs(a - b).max())
        for a, b, path in zip(
            with_term["model"], without["model"], with_term["paths"]
        )
        if "Transformer" in path
    ]
    assert min(gaps) > 0.0 and max(gaps) > 1e-4
    assert max_gap(with_term["adversary"], without["adversary"]) < 1e-6
    initial = one_step["initial"]["adversary"]
    weights = with_term["own"]  # D's weights first, then its optimizer's
    moved = [
        float(np.abs(a - b).max())
        for a, b in zip(with_term["adversary"][:weights], initial[:weights])
    ]
    assert min(moved) > 0.0
    assert with_term["history"]["adversarial"][0] > 0.0


@pytest.mark.slow
def test_every_k_steps_trains_the_discriminator_every_k_steps():
    trainer = professor_trainer(every=2)
    history = fit_steps(trainer, steps=3)
    assert int(trainer.strategy_state.own_optimizer.iterations) == 2
    # Optimizer steps 0 and 2 measured; step 1 was plain teacher forcing.
    for name in ("adversarial", "disc_loss", "disc_accuracy"):
        values = history[name]
        assert values[1] == 0.0 and values[0] > 0.0 and values[2] > 0.0, name
    assert history["loss"][1] == history["ce"][1]
    assert history["loss"][2] > history["ce"][2]


def trained_state(trainer):
    return [
        *numpy_values(trainer.model.weights),
        *numpy_values(trainer.optimizer.variables),
        *numpy_values(trainer.strategy_variables()),
    ]


@pytest.mark.slow
def test_resume_restores_the_discriminator_and_its_optimizer(tmp_path):
    """Saved after two steps and restored into a fresh trainer (other
    initial weights, other D), the third step is the uninterrupted one."""
    out = RunDirectory(tmp_path)
    state = out.load_state({"epochs_done": 0})
    trainer = professor_trainer(optimizer=keras.optimizers.Adam(1e-2))
    fit_steps(trainer, steps=2)
    state["epochs_done"] = 1
    out.save_checkpoint(trainer, state, "epoch-1")
    assert (tmp_path / "epoch-1.strategy.npz").exists()
    saved = numpy_values(trainer.strategy_variables())
    fit_steps(trainer)
    uninterrupted = trained_state(trainer)

    resumed = professor_trainer(seed=1, optimizer=keras.optimizers.Adam(1e-2))
    assert max_gap(numpy_values(resumed.strategy_variables()), saved) > 1e-3
    out.restore_checkpoint(resumed, state)
    for restored, value in zip(resumed.strategy_variables(), saved):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(restored), value
        )
    assert int(resumed.strategy_state.own_optimizer.iterations) == 2
    fit_steps(resumed)
    assert max_gap(trained_state(resumed), uninterrupted) < 1e-6

    other = professor_trainer(
        optimizer=keras.optimizers.Adam(1e-2), discriminator_units=8
    )
    with pytest.raises(ValueError, match="strategy variable 0 .* shape"):
        out.restore_checkpoint(other, state)
