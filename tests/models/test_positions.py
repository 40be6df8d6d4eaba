"""models/positions.py: the rotary rule's defining property, the relative
ids, and every training strategy stepping a RoFormer and a NEZHA.

Parity with references is in test_roformer.py (transformers) and
test_nezha.py (NumPy, a hand case)."""

import keras
import numpy as np
import pytest

from models.positions import relative_ids
from models.positions import rotate
from models.strategies import STRATEGIES
from models.trainer import Seq2SeqTrainer
from tests.common import NO_DROPOUT
from tests.common import mixed_batch
from tests.common import trainer_model


def test_rotary_scores_depend_only_on_the_distance():
    """<R_m q, R_n k> = <R_{m+s} q, R_{n+s} k>, and rotation keeps norms
    (RoFormer, eq. 16): what lets a cached step rotate only its token."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 1, 1, 1, 8)).astype("float32")

    def at(x, position):
        rotated = rotate(x, np.array([[position]]))
        return keras.ops.convert_to_numpy(rotated)[0, 0, 0]

    for m, n, shift in [(0, 3, 5), (7, 2, 11), (4, 4, 30)]:
        here = at(q, m) @ at(k, n)
        there = at(q, m + shift) @ at(k, n + shift)
        np.testing.assert_allclose(here, there, rtol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(at(q, 9)), np.linalg.norm(q), rtol=1e-6
    )
    assert abs(at(q, 0) @ at(k, 3) - at(q, 0) @ at(k, 4)) > 1e-3


def test_relative_ids_clip_at_the_maximum_distance():
    ids = relative_ids(np.arange(5)[:, None], np.arange(5)[None, :], 2)
    expected = [
        [min(max(j - i, -2), 2) + 2 for j in range(5)] for i in range(5)
    ]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ids), expected)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["roformer", "nezha"])
def test_every_strategy_steps(model_type):
    """One SGD step per strategy from the same weights: finite loss and
    moved weights, on the families' own attention layers (slow: one
    compiled step per strategy, 2-3 minutes per family on a loaded CPU)."""
    token_ids, segment_ids = mixed_batch()
    model = trainer_model(model_type=model_type, **NO_DROPOUT)
    initial = model.get_weights()
    for name in sorted(STRATEGIES):
        model.set_weights(initial)
        trainer = Seq2SeqTrainer(model, name, seed=0)
        trainer.compile(optimizer=keras.optimizers.SGD(0.3))
        history = trainer.fit(
            x=(token_ids, segment_ids), batch_size=8, epochs=1, verbose=0
        ).history
        assert np.isfinite(history["loss"][0]), name
        moved = [
            np.abs(after - before).max()
            for after, before in zip(model.get_weights(), initial)
        ]
        assert max(moved) > 0, name
