"""Training T5 / mT5 with `EncoderDecoderTrainer`.

The loss is checked against Hugging Face's own cross-entropy (labels
shifted, padding ignored) on the same random weights; every strategy must
train through the decoder's inputs (the slow tier runs them all).
"""

import keras
import numpy as np
import pytest

from models.strategies.names import STRATEGY_NAMES
from models.t5 import build_t5_model
from models.t5_trainer import EncoderDecoderTrainer
from tests.checkpoints import TINY_T5
from tests.checkpoints import hf_mt5


def pairs(seed=0):
    """(source_ids, target_ids): targets are [0, title..., 1, padding]."""
    rng = np.random.default_rng(seed)
    sources = rng.integers(2, 40, (4, 9)).astype("int32")
    sources[1, 5:] = 0
    targets = np.zeros((4, 7), "int32")
    for row, length in enumerate([5, 2, 3, 1]):
        targets[row, 1 : length + 1] = rng.integers(2, 40, length)
        targets[row, length + 1] = 1
    return sources, targets


def test_loss_is_hf_cross_entropy(tmp_path):
    torch = pytest.importorskip("torch")
    hf = hf_mt5(seed=1)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model = build_t5_model(dict(TINY_T5), tmp_path)
    trainer = EncoderDecoderTrainer(model)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    sources, targets = pairs()
    ours = trainer.evaluate(x=(sources, targets), batch_size=4, verbose=0)
    labels = torch.tensor(targets[:, 1:], dtype=torch.long)
    labels[labels == 0] = -100
    with torch.no_grad():
        theirs = hf(
            input_ids=torch.tensor(sources, dtype=torch.long),
            attention_mask=torch.tensor(sources != 0, dtype=torch.long),
            decoder_input_ids=torch.tensor(targets[:, :-1], dtype=torch.long),
            labels=labels,
        ).loss.item()
    assert ours == pytest.approx(theirs, abs=1e-5)


def train_one_epoch(strategy, **options):
    model = build_t5_model(dict(TINY_T5, dropout_rate=0.1))
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    trainer = EncoderDecoderTrainer(
        model, strategy=strategy, seed=0, max_targets=6, **options
    )
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = trainer.fit(x=pairs(), batch_size=4, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(v) for v in model.weights]
    return history.history, before, after


@pytest.mark.parametrize("strategy", ["replace", "scheduled"])
def test_decoder_input_strategies_train(strategy):
    history, before, after = train_one_epoch(strategy)
    assert np.isfinite(history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.slow
def test_every_strategy_trains_an_encoder_decoder():
    for strategy in STRATEGY_NAMES:
        if strategy in EncoderDecoderTrainer.NOT_BUILT:
            continue
        history, before, after = train_one_epoch(strategy)
        assert all(np.isfinite(v[0]) for v in history.values()), strategy
        changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
        assert any(changed), strategy


def test_batches_must_be_source_target_pairs():
    trainer = EncoderDecoderTrainer(build_t5_model(dict(TINY_T5)))
    with pytest.raises(ValueError, match=r"\(source_ids, target_ids\)"):
        trainer.unpack_batch([np.zeros((1, 3))] * 3)
    with pytest.raises(ValueError, match="needs a model"):
        EncoderDecoderTrainer(keras.Sequential())


@pytest.mark.parametrize("strategy", EncoderDecoderTrainer.NOT_BUILT)
def test_sequence_level_strategies_are_refused_in_one_line(strategy):
    with pytest.raises(ValueError, match=f"'{strategy}' is not built for an"):
        train_one_epoch(strategy)
