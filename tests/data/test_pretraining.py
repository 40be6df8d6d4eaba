"""Pretraining data: documents, packing, UniLM pairs and batches."""

import numpy as np
import pytest

from data.pretraining import _MLM_ORDER
from data.pretraining import PretrainingBatches
from data.pretraining import cut_pairs
from data.pretraining import pack_documents
from data.pretraining import read_documents
from data.pretraining import unilm_row

CLS, SEP, MASK = 2, 3, 4
MASKING = {"vocab_size": 100, "mask_id": MASK, "special_ids": [1, CLS, SEP]}


def documents(lengths, first=10):
    """Documents of distinct ids, so any span can be located exactly."""
    docs, start = [], first
    for length in lengths:
        ids = np.arange(start, start + length, dtype=np.int32)
        docs.append((ids, np.ones(length, bool)))
        start += length
    return docs


def test_read_documents_skips_blank_lines_and_limits(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("一\n\n  二 \n", encoding="utf-8")
    second.write_text("三\n四\n", encoding="utf-8")
    assert read_documents([first, second]) == ["一", "二", "三", "四"]
    assert read_documents([first, second], limit=3) == ["一", "二", "三"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_documents([tmp_path / "missing.txt"])


def test_pack_documents_fills_rows_with_the_joined_stream():
    docs = documents([5, 30, 2, 12])
    token_ids, starts = pack_documents(docs, 16, CLS, SEP)
    assert token_ids.shape == starts.shape == (4, 16)
    assert (token_ids[:, 0] == CLS).all()
    stream = token_ids[:, 1:].ravel()
    stream = stream[: np.flatnonzero(stream)[-1] + 1]
    expected = np.concatenate([np.append(ids, SEP) for ids, _ in docs])
    assert stream.tolist() == expected.tolist()
    # Only the last row has padding.
    assert (token_ids[:-1] != 0).all() and (token_ids[-1] == 0).any()


def test_pack_documents_restarts_a_word_cut_by_a_row_boundary():
    ids = np.arange(10, 40, dtype=np.int32)
    starts = np.zeros(30, bool)
    starts[0] = True  # one word of 30 tokens
    _, word_starts = pack_documents([(ids, starts)], 8, CLS, SEP)
    assert word_starts[:, :2].all()
    assert not word_starts[0, 2:].any()


@pytest.mark.parametrize("length", [2, 3, 40, 157, 600])
def test_cut_pairs_gives_adjacent_spans_within_limits(length):
    doc = np.arange(100, 100 + length)
    rng = np.random.default_rng(length)
    pairs = cut_pairs(doc, rng, source_len=50, target_len=12)
    assert pairs
    position = 0
    for source, target in pairs:
        assert 1 <= len(source) <= 50 and 1 <= len(target) <= 12
        # Adjacent spans of the one document, target right after source.
        start = int(source[0]) - 100
        assert start >= position
        span = np.concatenate([source, target])
        assert span.tolist() == doc[start : start + len(span)].tolist()
        position = start + len(span)
    assert position <= length


def test_cut_pairs_skips_documents_too_short_for_a_pair():
    assert cut_pairs(np.array([7]), np.random.default_rng(0), 5, 5) == []


def test_unilm_row_labels_are_the_shifted_target():
    token_ids, segment_ids, labels = unilm_row(
        np.array([11, 12, 13]), np.array([21, 22]), CLS, SEP
    )
    assert token_ids.tolist() == [CLS, 11, 12, 13, SEP, 21, 22, SEP]
    assert segment_ids.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    # Position i predicts token i + 1 when that token is in the target.
    assert labels.tolist() == [0, 0, 0, 0, 21, 22, SEP, 0]


def make_batches(unilm_ratio, steps=40, seed=0):
    docs = documents([30, 7, 55, 12, 80, 3, 41])
    rows = pack_documents(docs, 32, CLS, SEP)
    rng = np.random.default_rng(0)
    pairs = [pair for ids, _ in docs for pair in cut_pairs(ids, rng, 21, 8)]
    return PretrainingBatches(
        rows,
        pairs,
        steps,
        4,
        32,
        MASKING,
        CLS,
        SEP,
        unilm_ratio=unilm_ratio,
        seed=seed,
    )


def test_batches_have_one_shape_for_both_objectives():
    batches = make_batches(0.5)
    assert {batches.objective(s) for s in range(len(batches))} == {
        "mlm",
        "unilm",
    }
    for step in range(len(batches)):
        (token_ids, segment_ids), labels = batches[step]
        assert token_ids.shape == segment_ids.shape == labels.shape == (4, 32)
        assert token_ids.dtype == labels.dtype == np.int32
        if batches.objective(step) == "mlm":
            assert (segment_ids == 0).all()
            assert (labels != 0).any()
        else:
            target = segment_ids[:, 1:] == 1
            assert (labels[:, :-1][target] == token_ids[:, 1:][target]).all()
            assert (labels[:, :-1][~target] == 0).all()


def test_mix_ratio_is_respected():
    batches = make_batches(0.3, steps=2000)
    share = np.mean([batches.objective(s) == "unilm" for s in range(2000)])
    assert share == pytest.approx(0.3, abs=0.04)
    assert not make_batches(0.0).is_unilm.any()
    assert make_batches(1.0).is_unilm.all()


def test_a_batch_depends_only_on_seed_and_step():
    first, second = make_batches(0.5), make_batches(0.5)
    for step in (17, 3, 17, 39):
        a, b = first[step], second[step]
        assert (a[0][0] == b[0][0]).all() and (a[1] == b[1]).all()
    other = make_batches(0.5, seed=1)
    assert any((first[s][1] != other[s][1]).any() for s in range(10))


def test_mlm_stream_visits_every_row_once_per_epoch():
    batches = make_batches(0.0, steps=10)
    rows = len(batches.rows[0])
    seen = [batches._pick(rows, step, _MLM_ORDER) for step in range(10)]
    seen = np.concatenate(seen)[:rows]
    assert sorted(seen.tolist()) == list(range(rows))
