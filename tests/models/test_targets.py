"""The gathered MLM head: scored positions, and parity with the full head."""

import keras
import numpy as np
import pytest
from keras import ops

from data import Seq2SeqBatches
from data.tokenizer import Tokenizer
from data.vocab import SPECIAL_TOKENS
from models import backend
from models import strategies
from models import targets
from models.trainer import Seq2SeqTrainer
from tests.common import CHARACTERS
from tests.common import NO_DROPOUT
from tests.common import mixed_batch
from tests.common import trainer_model


def scored_numpy(token_ids, segment_ids):
    """Per row, the (position, label) pairs the loss scores, in order."""
    return [
        [
            (t, token_ids[row, t + 1])
            for t in range(token_ids.shape[1] - 1)
            if segment_ids[row, t + 1] == 1
        ]
        for row in range(token_ids.shape[0])
    ]


@pytest.mark.parametrize("count", [None, 5, 6, 30])
def test_index_names_the_scored_positions_in_order(count):
    token_ids, segment_ids = mixed_batch()
    index = targets.target_index(token_ids, segment_ids, count)
    positions = ops.convert_to_numpy(index.positions)
    labels = ops.convert_to_numpy(index.labels)
    mask = ops.convert_to_numpy(index.mask)
    slots = count or token_ids.shape[1] - 1
    assert positions.shape == labels.shape == mask.shape == (3, slots)
    for row, pairs in enumerate(scored_numpy(token_ids, segment_ids)):
        picked = [
            (positions[row, j], labels[row, j])
            for j in range(slots)
            if mask[row, j] == 1
        ]
        assert picked == pairs
        assert mask[row].sum() == len(pairs)


def test_spread_is_the_inverse_of_gather():
    token_ids, segment_ids = mixed_batch()
    index = targets.target_index(token_ids, segment_ids, 6)
    values = np.arange(token_ids.size * 2, dtype="float32").reshape(
        token_ids.shape + (2,)
    )
    back = ops.convert_to_numpy(
        targets.spread(targets.gather(values, index), index)
    )
    for row, pairs in enumerate(scored_numpy(token_ids, segment_ids)):
        for position, _ in pairs:
            np.testing.assert_array_equal(
                back[row, position], values[row, position]
            )


def test_a_count_below_a_rows_targets_drops_them():
    """The documented failure mode, so `max_targets` must be an upper bound:
    row 1 of `mixed_batch` has 5 targets."""
    token_ids, segment_ids = mixed_batch()
    index = targets.target_index(token_ids, segment_ids, 3)
    assert ops.convert_to_numpy(index.mask).sum(axis=1).tolist() == [3, 3, 2]


def losses_and_gradients(name, head, options):
    """(objective, figures, gradients of every trainable variable) of one
    training batch, with fresh seeds so both heads draw alike."""
    keras.utils.set_random_seed(0)
    model = trainer_model(**NO_DROPOUT)
    keras.utils.set_random_seed(1)
    trainer = Seq2SeqTrainer(
        model, name, seed=0, max_targets=6, target_head=head, **options
    )
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    token_ids, segment_ids = mixed_batch()
    variables = trainer.trainable_variables

    def fn():
        return trainer.compute_losses(token_ids, segment_ids, training=True)

    def step():
        return backend.gradients(fn, variables, trainer.state_variables())

    # Compiled: eager JAX compiles every op of both passes one by one.
    step = backend.compile_function(step, trainer.state_variables())
    total, figures, grads = step()
    return (
        float(total),
        {k: np.asarray(ops.convert_to_numpy(v)) for k, v in figures.items()},
        [ops.convert_to_numpy(g) for g in grads],
    )


STRATEGY_CASES = [
    ("baseline", {}),
    ("gp", {}),
    ("replace", {}),
    ("fgm", {}),
    ("teaforn", {"feed": "topk"}),
    ("teaforn", {"feed": "hidden"}),
    ("scheduled", {"schedule": "constant", "rate": 1.0, "mix": "soft"}),
    ("scheduled", {"schedule": "constant", "rate": 1.0}),
    ("professor", {}),
    ("pgd", {}),
    # The default xi (1e-6) finds its direction from a KL of order xi^2,
    # where float32 rounding of the two heads' sums shows at 1e-4; a larger
    # step compares the same computation, well conditioned.
    ("vat", {"xi": 0.1}),
    ("rdrop", {}),
    ("scst", {}),
    ("mrt", {"candidates": 2}),
    ("oracle", {"level": "sentence", "candidates": 2}),
]


def test_every_strategy_has_a_parity_case():
    names = {name for name, _ in STRATEGY_CASES}
    assert names == set(strategies.STRATEGIES)


@pytest.mark.slow
@pytest.mark.parametrize("name, options", STRATEGY_CASES)
def test_gathered_head_equals_the_full_head(name, options):
    """Loss, figures and every gradient, to float32 rounding."""
    total, figures, grads = losses_and_gradients(name, "gathered", options)
    want_total, want_figures, want_grads = losses_and_gradients(
        name, "full", options
    )
    np.testing.assert_allclose(total, want_total, rtol=1e-5)
    assert figures.keys() == want_figures.keys()
    for key in figures:
        np.testing.assert_allclose(
            figures[key], want_figures[key], rtol=1e-5, atol=1e-7
        )
    assert len(grads) == len(want_grads)
    # Rounding differs with the order of sums: tolerances relative to the
    # largest gradient (some true gradients are rounding noise, ~1e-14).
    scale = max(float(np.abs(g).max()) for g in want_grads)
    assert scale > 0
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.slow
def test_evaluate_loss_is_the_same_under_both_heads():
    token_ids, segment_ids = mixed_batch()
    losses = []
    for head in ("gathered", "full"):
        trainer = Seq2SeqTrainer(
            trainer_model(**NO_DROPOUT), max_targets=5, target_head=head
        )
        trainer.compile(optimizer=keras.optimizers.SGD(0.0))
        losses.append(
            trainer.evaluate(
                x=(token_ids, segment_ids), batch_size=8, verbose=0
            )
        )
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_options_are_checked():
    model = trainer_model()
    with pytest.raises(ValueError, match="target_head"):
        Seq2SeqTrainer(model, target_head="sparse")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_targets"):
            Seq2SeqTrainer(model, max_targets=bad)


def test_fit_refuses_batches_with_longer_targets():
    tokens = [*SPECIAL_TOKENS, *CHARACTERS]
    tokenizer = Tokenizer({token: i for i, token in enumerate(tokens)})
    pairs = [("一二三四五六", "甲乙丙丁"), ("一二", "甲乙丙丁戊己庚")]
    batches = Seq2SeqBatches(pairs, tokenizer, maxlen=32, batch_size=2)
    assert batches.max_targets == 7  # six characters and [SEP]
    trainer = Seq2SeqTrainer(trainer_model(vocab_size=200), max_targets=6)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    with pytest.raises(ValueError, match="max_targets >= 7"):
        trainer.fit(batches, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="max_targets >= 7"):
        trainer.evaluate(batches, verbose=0)
