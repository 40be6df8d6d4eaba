"""compat.optimizers: bert4keras's optimizer extensions on Keras 3 features.

Updates are checked against hand-computed values (plain SGD as the base
makes every step `lr * gradient`).
"""

import keras
import numpy as np
import pytest

from compat import UnsupportedError
from compat.optimizers import Adam
from compat.optimizers import Lion
from compat.optimizers import extend_with_exponential_moving_average
from compat.optimizers import extend_with_gradient_accumulation
from compat.optimizers import extend_with_piecewise_linear_lr
from compat.optimizers import extend_with_weight_decay
from compat.optimizers import extend_with_weight_decay_v2

SGD = keras.optimizers.SGD


def scalar(value=0.0, name="w"):
    return keras.Variable(np.float32(value), name=name)


def run(optimizer, variable, gradients):
    values = []
    for gradient in gradients:
        optimizer.apply([np.float32(gradient)], [variable])
        values.append(float(variable.numpy()))
    return values


def test_adam_has_bert4keras_defaults():
    adam = Adam()
    assert adam.epsilon == 1e-6 and np.isclose(float(adam.learning_rate), 1e-3)
    assert np.isclose(float(Adam(lr=0.25).learning_rate), 0.25)
    with pytest.raises(UnsupportedError, match="bias"):
        Adam(bias_correction=False)
    lion = Lion()
    assert (lion.beta_1, lion.beta_2) == (0.95, 0.98)
    assert np.isclose(float(lion.learning_rate), 3e-4)


def bert_like_variables():
    """Variables with bert4keras layer names (paths carry them)."""
    dense = keras.layers.Dense(3, name="Transformer-0-FeedForward")
    dense.build((None, 4))
    norm = keras.layers.LayerNormalization(
        name="Transformer-0-FeedForward-Norm"
    )
    norm.build((None, 3))
    variables = dense.weights + norm.weights
    rng = np.random.default_rng(0)
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return variables


def test_weight_decay_follows_bert4keras_exclusions():
    AdamW = extend_with_weight_decay(Adam, "AdamW")
    assert AdamW.__name__ == "AdamW"
    assert extend_with_weight_decay_v2 is extend_with_weight_decay
    decayed, plain = bert_like_variables(), bert_like_variables()
    start = [v.numpy() for v in decayed]
    grads = [np.full(v.shape, 0.3, "float32") for v in decayed]
    AdamW(
        learning_rate=0.1,
        weight_decay_rate=0.05,
        exclude_from_weight_decay=["Norm", "bias"],
    ).apply(grads, decayed)
    Adam(learning_rate=0.1).apply(grads, plain)
    for v, p, x0 in zip(decayed, plain, start):
        excluded = "Norm" in v.path or "bias" in v.path
        expected = p.numpy() - (0 if excluded else 0.1 * 0.05 * x0)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert (
        sum("Norm" not in v.path and "bias" not in v.path for v in decayed) == 1
    )


def test_piecewise_linear_lr_scales_each_step():
    SGDLR = extend_with_piecewise_linear_lr(SGD)
    optimizer = SGDLR(learning_rate=0.5, lr_schedule={4: 1.0})
    # Multipliers 0, .25, .5, .75, 1, 1: steps of -0.5 * multiplier.
    values = run(optimizer, scalar(), [1.0] * 6)
    np.testing.assert_allclose(
        values, np.cumsum([0, -0.125, -0.25, -0.375, -0.5, -0.5]), rtol=1e-6
    )


def test_gradient_accumulation_updates_with_the_mean():
    SGDGA = extend_with_gradient_accumulation(SGD)
    optimizer = SGDGA(learning_rate=1.0, grad_accum_steps=2)
    values = run(optimizer, scalar(), [1.0, 3.0, 0.5, 0.5])
    np.testing.assert_allclose(values, [0.0, -2.0, -2.0, -2.5], rtol=1e-6)


def test_exponential_moving_average_is_applied_on_request():
    SGDEMA = extend_with_exponential_moving_average(SGD)
    optimizer = SGDEMA(learning_rate=1.0, ema_momentum=0.5)
    variable = scalar()
    assert run(optimizer, variable, [1.0, 1.0, 1.0]) == [-1.0, -2.0, -3.0]
    optimizer.apply_ema_weights()
    # The average starts from the first updated weight: -1, -1.5, -2.25.
    assert np.isclose(float(variable.numpy()), -2.25)
    optimizer.reset_old_weights()
    assert float(variable.numpy()) == -3.0


def test_fit_keeps_the_trained_weights_until_asked():
    """Keras 3 would swap in the average at the end of fit; bert4keras
    scripts call apply_ema_weights themselves (e.g. in a callback)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    AdamEMA = extend_with_exponential_moving_average(Adam)
    optimizer = AdamEMA(learning_rate=0.1, ema_momentum=0.9)
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    trained = [w.numpy() for w in model.weights]
    optimizer.apply_ema_weights()
    averaged = [w.numpy() for w in model.weights]
    assert not np.allclose(trained[0], averaged[0])
    # Predicting with the averages (JAX donates the weights' buffers) must
    # leave the averages intact for the next epochs.
    np.testing.assert_allclose(
        model.predict_on_batch(x), x @ averaged[0] + averaged[1], rtol=1e-5
    )
    optimizer.reset_old_weights()
    np.testing.assert_array_equal(model.weights[0].numpy(), trained[0])
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    optimizer.apply_ema_weights()
    assert not np.allclose(model.weights[0].numpy(), averaged[0])


def test_extensions_stack_and_round_trip_their_config():
    AdamW = extend_with_weight_decay(Adam, "AdamW")
    AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    AdamWLRGA = extend_with_gradient_accumulation(AdamWLR, "AdamWLRGA")
    optimizer = AdamWLRGA(
        learning_rate=2e-5,
        weight_decay_rate=0.01,
        exclude_from_weight_decay=["Norm", "bias"],
        lr_schedule={1000: 1, 2000: 0.1},
        grad_accum_steps=4,
    )
    config = optimizer.get_config()
    assert config["weight_decay_rate"] == 0.01
    assert config["lr_schedule"] == {1000: 1, 2000: 0.1}
    assert config["grad_accum_steps"] == 4
    assert np.isclose(config["learning_rate"], 2e-5)
    again = AdamWLRGA.from_config(config)
    assert again.get_config() == config
    assert again.gradient_accumulation_steps == 4 and again.weight_decay == 0.01
    assert float(again.learning_rate) == 0.0  # step 0 of the warm-up


@pytest.mark.parametrize(
    "name, hint",
    [
        ("AdaFactor", "keras.optimizers.Adafactor"),
        ("extend_with_lookahead", "lookahead"),
        ("extend_with_layer_adaptation_v2", "keras.optimizers.Lamb"),
    ],
)
def test_unsupported_optimizers_name_the_keras_way(name, hint):
    import compat.optimizers as optimizers

    with pytest.raises(UnsupportedError, match=hint):
        getattr(optimizers, name)
