"""Gradient checkpointing (`models.remat`, `gradient_checkpointing`): the
blocks are really recomputed in the backward pass, and training with it
gives the same gradients, dropout masks and random states as without."""

import keras
import numpy as np
import pytest

from models import backend
from models.bert import BertNetwork
from models.remat import checkpointed
from models.trainer import Seq2SeqTrainer
from tests.common import TINY_TRAINER
from tests.common import mixed_batch
from tests.common import tiny_unilm

DROPOUT = dict(hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
ON_JAX = backend.BACKEND == "jax"


def dropout_model():
    """Two blocks, dropout on: a recomputation must draw the same masks."""
    return tiny_unilm(TINY_TRAINER, 0, num_hidden_layers=2, **DROPOUT)


def seed_states(trainer):
    return [
        np.asarray(v)
        for v in trainer.variables
        if v.name == "seed_generator_state"
    ]


def train(checkpointing, strategy="baseline", steps=2):
    """(weight changes, seed states) after `steps` SGD steps of rate 1 on
    the same batch: the changes are the sums of the steps' gradients."""
    trainer = Seq2SeqTrainer(
        dropout_model(),
        strategy,
        seed=1,
        gradient_checkpointing=checkpointing,
    )
    trainer.compile(optimizer=keras.optimizers.SGD(1.0))
    before = [np.asarray(v) for v in trainer.trainable_variables]
    trainer.fit(
        x=mixed_batch(), batch_size=8, epochs=steps, shuffle=False, verbose=0
    )
    after = [np.asarray(v) for v in trainer.trainable_variables]
    return [b - a for b, a in zip(before, after)], seed_states(trainer)


def network_gradients(checkpointing):
    """(loss, gradients, seed states) of two dropout passes through the
    network, the second reading the first's output (as TeaForN does)."""
    model = dropout_model()
    network = model.bert_network
    network.gradient_checkpointing = checkpointing
    token_ids, segment_ids = mixed_batch()
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(*token_ids.shape, TINY_TRAINER["hidden_size"]))
    probe = probe.astype("float32")

    def loss():
        first = network(token_ids, segment_ids, training=True, output="hidden")
        second = network(
            token_ids,
            segment_ids,
            token_embeddings=first,
            training=True,
            output="hidden",
        )
        # Not a sum of squares: LayerNorm's outputs keep that constant.
        return keras.ops.sum((first + 2 * second) * probe), None

    variables = model.trainable_variables
    value, _, grads = backend.gradients(loss, variables, model.variables)
    seeds = [
        np.asarray(v)
        for v in model.variables
        if v.name == "seed_generator_state"
    ]
    return float(value), [np.asarray(g) for g in grads], seeds


def test_gradients_through_the_network_are_the_same_with_checkpointing():
    """Quick: the same loss, gradients and seed states, dropout on."""
    value, grads, seeds = network_gradients(False)
    got_value, got_grads, got_seeds = network_gradients(True)
    assert got_value == pytest.approx(value, rel=1e-6)
    assert max(float(np.abs(g).max()) for g in grads) > 1e-3
    for expected, got in zip(grads, got_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for expected, got in zip(seeds, got_seeds):
        np.testing.assert_array_equal(got, expected)


# The compiled training step, two steps. teaforn: two passes through the
# same blocks in one step, each with its own masks, the second reading the
# first's output.
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["baseline", "teaforn"])
def test_training_steps_give_the_same_gradients_with_checkpointing(strategy):
    plain, plain_seeds = train(False, strategy)
    recomputed, seeds = train(True, strategy)
    assert max(float(np.abs(g).max()) for g in plain) > 1e-3
    for expected, got in zip(plain, recomputed):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The random stream advanced as without checkpointing: the next
    # steps draw the same masks too.
    for expected, got in zip(plain_seeds, seeds):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not ON_JAX, reason="JAX's jaxpr")
def test_jax_traces_a_checkpoint_per_block():
    """The option is not silently dropped: the gradient's jaxpr holds one
    checkpoint (remat) per block with it, none without."""
    import jax

    model = dropout_model()
    network = model.bert_network
    token_ids, segment_ids = mixed_batch()

    def loss(values):
        mapping = list(zip(model.trainable_variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            hidden = network(
                token_ids, segment_ids, training=True, output="hidden"
            )
        return keras.ops.sum(hidden**2)

    values = [v.value for v in model.trainable_variables]
    counts = {}
    for checkpointing in (False, True):
        network.gradient_checkpointing = checkpointing
        jaxpr = str(jax.make_jaxpr(jax.grad(loss))(values))
        counts[checkpointing] = jaxpr.count("checkpoint[") + jaxpr.count(
            "remat"
        )
    assert counts == {False: 0, True: 2}


@pytest.mark.skipif(ON_JAX, reason="TensorFlow's tape")
def test_tensorflow_runs_each_block_again_in_the_backward_pass():
    """The option is not silently dropped: with it, taking the gradient
    calls every block once more (tf.recompute_grad); without, never."""
    import tensorflow as tf

    model = dropout_model()
    network = model.bert_network
    token_ids, segment_ids = mixed_batch()
    calls = []
    block = network.block

    def counted(index, *args, **kwargs):
        calls.append(index)
        return block(index, *args, **kwargs)

    network.block = counted
    backward = {}
    for checkpointing in (False, True):
        network.gradient_checkpointing = checkpointing
        with tf.GradientTape() as tape:
            hidden = network(
                token_ids, segment_ids, training=True, output="hidden"
            )
            loss = tf.reduce_sum(hidden**2)
        calls.clear()
        tape.gradient(loss, model.trainable_variables)
        backward[checkpointing] = sorted(calls)
    assert backward == {False: [], True: [0, 1]}


def test_inference_passes_are_not_checkpointed():
    """Decoding and evaluation (training=False) run the plain blocks."""
    model = dropout_model()
    network = model.bert_network
    token_ids, segment_ids = mixed_batch()
    expected = network(token_ids, segment_ids, output="hidden")
    network.gradient_checkpointing = True
    got = network(token_ids, segment_ids, output="hidden")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected)
    )


def test_the_trainer_sets_the_model_and_none_keeps_it():
    model = dropout_model()
    Seq2SeqTrainer(model, gradient_checkpointing=True)
    assert BertNetwork.from_model(model).gradient_checkpointing
    Seq2SeqTrainer(model)
    assert model.bert_network.gradient_checkpointing
    Seq2SeqTrainer(model, gradient_checkpointing=False)
    assert not model.bert_network.gradient_checkpointing


@pytest.mark.skipif(ON_JAX, reason="JAX has the second derivative")
def test_tensorflow_refuses_a_strategy_needing_a_second_derivative():
    with pytest.raises(ValueError, match="second derivative.*KERAS_BACKEND"):
        Seq2SeqTrainer(dropout_model(), "gp", gradient_checkpointing=True)


@pytest.mark.slow
@pytest.mark.skipif(
    not ON_JAX, reason="tf.recompute_grad has no second derivative"
)
def test_jax_trains_the_gradient_penalty_with_checkpointing():
    plain, _ = train(False, "gp", steps=1)
    recomputed, _ = train(True, "gp", steps=1)
    for expected, got in zip(plain, recomputed):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_checkpointed_keeps_nested_outputs_and_layer_state():
    """A nest of outputs comes back as it was; the dropout layer's seed
    advances once per call, as a plain call advances it."""
    dropout = keras.layers.Dropout(0.5, seed=3)
    x = keras.ops.ones((2, 8))
    run = checkpointed(
        lambda x: {"a": dropout(x, training=True), "b": [x * 2]}, [dropout]
    )
    before = np.asarray(dropout.seed_generator.state)
    out = run(x)
    assert sorted(out) == ["a", "b"] and len(out["b"]) == 1
    after = np.asarray(dropout.seed_generator.state)
    assert after[1] == before[1] + 1
