"""EncoderDecoderBatches: the (source_ids, target_ids) batches of an
mT5 run, checked against the tokenizer's own encodings of each pair and
against what EncoderDecoderTrainer reads."""

import numpy as np
import pytest

from data.batching import EncoderDecoderBatches
from data.batching import Seq2SeqBatches
from data.sentencepiece import SpTokenizer
from models.t5_trainer import unpack_pairs
from tests.checkpoints import write_sentencepiece_model

CORPUS = [
    "深度学习方法在中文自然语言处理中的应用研究",
    "本文提出一种基于注意力机制的序列到序列模型",
    "实验结果表明该方法在多个数据集上取得了较好的效果",
    "科技文献标题生成与摘要自动生成",
] * 20
END, START, PAD = 1, 0, 0


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "spiece.model"
    write_sentencepiece_model(path, CORPUS, vocab_size=80)
    return SpTokenizer(path, token_start=None, token_end="</s>")


def pairs(count):
    """(title, content) pairs of different lengths."""
    return [
        (CORPUS[i % 4][: 3 + i % 5], CORPUS[(i + 1) % 4] * (1 + i % 3))
        for i in range(count)
    ]


def rows(batch):
    """Each row of a padded batch without its trailing padding."""
    return [list(np.trim_zeros(row, "b")) for row in batch]


def test_sources_and_targets_are_the_pairs_encodings(tokenizer):
    data = pairs(7)
    batches = EncoderDecoderBatches(
        data,
        tokenizer,
        maxlen=12,
        target_maxlen=5,
        batch_size=3,
        shuffle=False,
    )
    seen = []
    for index in range(len(batches)):
        ((source_ids, target_ids),) = batches[index]
        assert source_ids.dtype == target_ids.dtype == np.int32
        seen += list(zip(rows(source_ids), rows(target_ids[:, 1:])))
        # Every row starts with the decoder's start token (the pad id).
        assert np.all(target_ids[:, 0] == START)
    for (title, content), (source, target) in zip(data, seen):
        assert source == tokenizer.encode(content, maxlen=12)[0]
        assert target == tokenizer.encode(title, maxlen=5)[0]
        assert source[-1] == END and target[-1] == END
        assert len(source) <= 12 and len(target) <= 5
    longest = max(len(tokenizer.encode(t, maxlen=5)[0]) for t, _ in data)
    assert batches.max_targets == longest


def test_padding_follows_each_stream(tokenizer):
    batches = EncoderDecoderBatches(
        pairs(6),
        tokenizer,
        maxlen=40,
        target_maxlen=8,
        batch_size=6,
        shuffle=False,
        length_multiple=16,
    )
    ((source_ids, target_ids),) = batches[0]
    longest = max(len(s[0]) for s in batches.samples)
    # Sources round up to the multiple (never past maxlen); targets pad
    # to their longest row, start token included.
    assert source_ids.shape[1] == min(-(-longest // 16) * 16, 40)
    assert target_ids.shape[1] == max(len(s[1]) for s in batches.samples)
    assert (source_ids[:, -1] == PAD).any()


def test_order_is_seq2seq_batches_order(tokenizer):
    """Shuffling and bucketing are Seq2SeqBatches', by (seed, epoch)."""
    data = pairs(20)
    kwargs = dict(batch_size=4, shuffle=True, seed=3, bucket=True)
    ours = EncoderDecoderBatches(data, tokenizer, 30, 6, **kwargs)
    again = EncoderDecoderBatches(data, tokenizer, 30, 6, **kwargs)
    for epoch in (0, 1):
        ours.set_epoch(epoch)
        again.set_epoch(epoch)
        assert ours._batches == again._batches
    served = sorted(i for batch in ours._batches for i in batch)
    assert served == list(range(20))
    assert isinstance(ours, Seq2SeqBatches)


def test_the_trainer_reads_the_batches(tokenizer):
    batches = EncoderDecoderBatches(pairs(4), tokenizer, 20, 6, batch_size=4)
    batch = batches[0]
    ((source_ids, target_ids),) = batch
    targets, sources = unpack_pairs(batch)
    assert targets is target_ids and sources is source_ids


def test_rejects_a_target_without_room_for_a_token(tokenizer):
    with pytest.raises(ValueError, match="target_maxlen must be at least 2"):
        EncoderDecoderBatches(pairs(2), tokenizer, 20, 1, batch_size=2)
