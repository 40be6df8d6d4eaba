"""data.SpTokenizer against bert4keras 0.11's own SpTokenizer, on a small
SentencePiece model trained here with T5's special ids."""

import pytest

from data.sentencepiece import SpTokenizer
from tests.checkpoints import write_sentencepiece_model
from tests.compat import reference

# Chinese and Latin text, digits, punctuation, a character the model has
# never seen (unknown), spaces and an empty text.
TEXTS = [
    "基于深度学习的中文标题生成方法研究",
    "本文提出一种新的序列到序列模型，用于科技文献摘要。",
    "BERT模型在CSL数据集上的ROUGE-L为0.61",
    "曝光偏差 exposure bias 与 教师强制",
    "龘",
    "",
    "  多个   空格  ",
]
CORPUS = [
    "深度学习方法在中文自然语言处理中的应用研究",
    "本文提出一种基于注意力机制的序列到序列模型",
    "实验结果表明该方法在多个数据集上取得了较好的效果",
    "科技文献标题生成与摘要自动生成",
    "exposure bias in sequence to sequence models, BERT and T5",
    "0123456789 ROUGE BLEU CSL LCSTS",
] * 20


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sp") / "spiece.model"
    return write_sentencepiece_model(path, CORPUS, vocab_size=120)


def tokenizer_pair(model_path, **kwargs):
    theirs = reference.tokenizers().SpTokenizer(str(model_path), **kwargs)
    return SpTokenizer(model_path, **kwargs), theirs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token_start": None, "token_end": "</s>"},  # bert4keras's mT5 use
        {},  # bert4keras's defaults: [CLS]/[SEP], unknown to the model
        {"token_start": None, "token_end": None},
        {"token_translate": {"▁": "<pad>"}},
    ],
)
def test_encode_and_decode_equal_bert4keras(model_path, kwargs):
    ours, theirs = tokenizer_pair(model_path, **kwargs)
    for text in TEXTS:
        assert ours.tokenize(text) == theirs.tokenize(text)
        for maxlen in (None, 1, 3, 8):
            assert ours.tokenize(text, maxlen) == theirs.tokenize(text, maxlen)
            assert ours.encode(text, maxlen=maxlen) == theirs.encode(
                text, maxlen=maxlen
            )
            for title in TEXTS[:3]:
                assert ours.encode(text, title, maxlen=maxlen) == theirs.encode(
                    text, title, maxlen=maxlen
                )
        ids = ours.encode(text)[0]
        assert ours.decode(ids) == theirs.decode(ids)


def test_ids_and_special_tokens_equal_bert4keras(model_path):
    ours, theirs = tokenizer_pair(
        model_path, token_start=None, token_end="</s>"
    )
    for name in ("pad", "unk", "mask", "end"):
        attribute = f"_token_{name}_id"
        assert getattr(ours, attribute) == getattr(theirs, attribute), name
    assert (ours.pad_id, ours.end_id, ours.unk_id) == (0, 1, 2)
    assert ours.start_id is None
    assert ours._vocab_size == theirs._vocab_size == ours.vocab_size
    for i in range(ours.vocab_size + 3):
        assert ours.id_to_token(i) == theirs.id_to_token(i)
        assert ours._is_decodable(i) == theirs._is_decodable(i)
    for token in ("▁", "深度", "[MASK]", "never-a-piece"):
        assert ours.token_to_id(token) == theirs.token_to_id(token)


def test_decode_drops_control_pieces_and_padded_ids(model_path):
    tokenizer = SpTokenizer(model_path, token_start=None, token_end="</s>")
    ids = tokenizer.encode(TEXTS[0])[0]
    assert ids[-1] == tokenizer.end_id
    padded = [tokenizer.pad_id] + ids + [tokenizer.vocab_size + 5]
    assert tokenizer.decode(padded) == TEXTS[0]


def test_a_file_that_is_not_a_model_fails_in_one_line(tmp_path):
    path = tmp_path / "spiece.model"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="spiece.model: not a SentencePiece"):
        SpTokenizer(path)
    with pytest.raises(ValueError, match="missing.model: not a SentencePiece"):
        SpTokenizer(tmp_path / "missing.model")
