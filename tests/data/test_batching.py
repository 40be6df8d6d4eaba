"""sequence_padding and Seq2SeqBatches: shapes, truncation, order."""

import numpy as np
import pytest

from data.batching import Seq2SeqBatches
from data.batching import sequence_padding
from tests.common import CHARACTERS

CHINESE = CHARACTERS[:20]


def make_pairs(count, seed=0):
    """Pairs of contents 1-39 characters long, each title unique."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        title = CHINESE[i % 20] + CHINESE[(i // 20) % 20] + "的"
        content = "".join(rng.choice(list(CHINESE), rng.integers(1, 40)))
        pairs.append((title, content))
    return pairs


def unpadded_rows(dataset):
    """Every served sample with its padding removed, in serving order."""
    rows = []
    for index in range(len(dataset)):
        ((token_ids, segment_ids),) = dataset[index]
        for ids in token_ids:
            rows.append(tuple(ids[ids != 0].tolist()))
    return rows


def test_padding_post_pre_and_cut():
    inputs = [[1, 2, 3], [4], [5, 6]]
    assert sequence_padding(inputs).tolist() == [
        [1, 2, 3],
        [4, 0, 0],
        [5, 6, 0],
    ]
    assert sequence_padding(inputs, mode="pre", value=9).tolist() == [
        [1, 2, 3],
        [9, 9, 4],
        [9, 5, 6],
    ]
    assert sequence_padding(inputs, length=2).tolist() == [
        [1, 2],
        [4, 0],
        [5, 6],
    ]


def test_padding_two_sequence_dims():
    inputs = [np.ones((2, 3)), np.ones((1, 1))]
    padded = sequence_padding(inputs, seq_dims=2)
    assert padded.shape == (2, 2, 3)
    assert padded[1].sum() == 1


def test_padding_rejects_unknown_mode():
    with pytest.raises(ValueError, match="post"):
        sequence_padding([[1]], mode="middle")


def test_batches_shapes_and_segments(tiny_tokenizer):
    pairs = make_pairs(10)
    dataset = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 4, shuffle=False)
    assert len(dataset) == 3
    ((token_ids, segment_ids),) = dataset[0]
    assert token_ids.dtype == segment_ids.dtype == np.int32
    lengths = [len(tiny_tokenizer.encode(c, t)[0]) for t, c in pairs[:4]]
    assert token_ids.shape == segment_ids.shape == (4, max(lengths))
    row = token_ids[0][token_ids[0] != 0]
    first_end = row.tolist().index(tiny_tokenizer.end_id)
    assert segment_ids[0][: first_end + 1].sum() == 0
    assert segment_ids[0][first_end + 1 : len(row)].all()
    assert tiny_tokenizer.decode(row[first_end + 1 :]) == pairs[0][0]
    assert dataset[2][0][0].shape[0] == 2  # the last batch is smaller


def test_long_texts_are_cut_not_dropped(tiny_tokenizer):
    pairs = make_pairs(7) + [("标题", "一二三四五" * 100)]
    dataset = Seq2SeqBatches(pairs, tiny_tokenizer, 16, 3, shuffle=False)
    rows = unpadded_rows(dataset)
    assert len(rows) == len(pairs)
    assert max(len(row) for row in rows) <= 16
    assert tiny_tokenizer.decode(rows[-1]).endswith("标题")


def test_fixed_length(tiny_tokenizer):
    dataset = Seq2SeqBatches(
        make_pairs(9), tiny_tokenizer, 32, 4, fixed_length=48
    )
    shapes = {dataset[i][0][0].shape[1] for i in range(len(dataset))}
    assert shapes == {48}
    with pytest.raises(ValueError, match="fixed_length"):
        Seq2SeqBatches(make_pairs(3), tiny_tokenizer, 32, 4, fixed_length=16)


def test_every_sample_once_per_epoch(tiny_tokenizer):
    dataset = Seq2SeqBatches(make_pairs(23), tiny_tokenizer, 64, 4, seed=1)
    expected = sorted(tuple(ids) for ids, _ in dataset.samples)
    for _ in range(2):
        assert sorted(unpadded_rows(dataset)) == expected
        dataset.on_epoch_end()


def test_no_shuffle_keeps_file_order(tiny_tokenizer):
    dataset = Seq2SeqBatches(make_pairs(9), tiny_tokenizer, 64, 4, False)
    assert unpadded_rows(dataset) == [tuple(ids) for ids, _ in dataset.samples]


def test_order_is_deterministic_by_seed_and_epoch(tiny_tokenizer):
    pairs = make_pairs(40)
    first = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 4, seed=7)
    again = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 4, seed=7)
    other = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 4, seed=8)
    epoch0 = unpadded_rows(first)
    assert unpadded_rows(again) == epoch0
    assert unpadded_rows(other) != epoch0
    first.on_epoch_end()
    assert unpadded_rows(first) != epoch0
    again.set_epoch(1)
    assert unpadded_rows(again) == unpadded_rows(first)


def test_bucketing_groups_lengths(tiny_tokenizer):
    pairs = make_pairs(64)
    plain = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 8, seed=0)
    bucketed = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 8, bucket=True)
    served = _length_ranges(bucketed)
    ordered = sorted(served)
    # One chunk, sorted: batches cover disjoint, ordered length ranges...
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:]))
    # ...but are not served shortest first.
    assert served != ordered
    assert _padding(bucketed) < _padding(plain)


def _length_ranges(dataset):
    """(shortest, longest) sample of each batch, in serving order."""
    ranges = []
    for index in range(len(dataset)):
        ((token_ids, _),) = dataset[index]
        lengths = (token_ids != 0).sum(axis=1)
        ranges.append((lengths.min(), lengths.max()))
    return ranges


def _padding(dataset):
    return sum(int((dataset[i][0][0] == 0).sum()) for i in range(len(dataset)))


def test_rejects_empty_pairs_and_bad_batch_size(tiny_tokenizer):
    with pytest.raises(ValueError, match="at least one pair"):
        Seq2SeqBatches([], tiny_tokenizer, 32, 4)
    with pytest.raises(ValueError, match="batch_size"):
        Seq2SeqBatches(make_pairs(3), tiny_tokenizer, 32, 0)


def test_keras_reads_inputs_without_targets(tiny_tokenizer):
    """`(inputs,)` reaches a two-input model as x, with no y."""
    keras = pytest.importorskip("keras")
    token_ids = keras.Input((None,), dtype="int32")
    segment_ids = keras.Input((None,), dtype="int32")
    total = keras.layers.Add()([token_ids, segment_ids])
    model = keras.Model([token_ids, segment_ids], total)
    pairs = make_pairs(10)
    dataset = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 4, shuffle=False)
    outputs = [model.predict_on_batch(dataset[i][0]) for i in range(3)]
    assert sum(len(o) for o in outputs) == len(pairs)
    expected = dataset[0][0][0] + dataset[0][0][1]
    np.testing.assert_array_equal(outputs[0], expected)
    # One shape for every batch, so predict can stack the outputs.
    fixed = Seq2SeqBatches(pairs, tiny_tokenizer, 64, 4, fixed_length=64)
    assert model.predict(fixed, verbose=0).shape == (len(pairs), 64)


def test_fit_trains_on_inputs_only(tiny_tokenizer):
    """A UniLM-style model computes its loss from x; `fit` passes y=None."""
    keras = pytest.importorskip("keras")

    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = keras.layers.Embedding(64, 4)

        def call(self, inputs):
            token_ids, segment_ids = inputs
            mask = keras.ops.cast(segment_ids, "float32")[..., None]
            return self.embedding(token_ids) * mask

        def compute_loss(self, x, y, y_pred, sample_weight, training=True):
            assert y is None
            return keras.ops.mean(keras.ops.square(y_pred))

    model = Tiny()
    model.compile(optimizer="sgd")
    dataset = Seq2SeqBatches(make_pairs(10), tiny_tokenizer, 64, 4)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert dataset.epoch >= 2  # Keras reshuffled between epochs


def test_length_multiple_rounds_up_but_never_past_maxlen(tiny_tokenizer):
    pairs = [("标题", "内容" * n) for n in (1, 3, 9, 20)]
    for batch_size, maxlen in ((1, 64), (4, 30)):
        batches = Seq2SeqBatches(
            pairs,
            tiny_tokenizer,
            maxlen=maxlen,
            batch_size=batch_size,
            shuffle=False,
            length_multiple=8,
        )
        for index in range(len(batches)):
            ((token_ids, _),) = batches[index]
            longest = max(int((row != 0).sum()) for row in token_ids)
            width = token_ids.shape[1]
            assert width >= longest
            assert width % 8 == 0 or width == maxlen
            assert width <= max(maxlen, longest)
