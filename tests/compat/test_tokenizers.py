"""compat.tokenizers: data.Tokenizer plus bert4keras's class-level helpers."""

import pytest

from compat.tokenizers import Tokenizer
from compat.tokenizers import load_vocab
from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.compat import reference

CHARACTERS = "中a，。[#Σ\ue000\u200b \t"


@pytest.fixture(scope="module")
def token_dict():
    return load_vocab(str(require_shared(VOCAB_DIR / "vocab.txt")))


def test_static_helpers_equal_bert4keras():
    theirs = reference.tokenizers().Tokenizer
    for ch in CHARACTERS:
        for helper in ("_is_space", "_is_punctuation", "_is_cjk_character"):
            assert getattr(Tokenizer, helper)(ch) == getattr(theirs, helper)(ch)
        assert Tokenizer._is_control(ch) == theirs._is_control(ch)
    for token in ("中国", "##国", "abc", "##", "[unused1]", "，", "a-b"):
        assert bool(Tokenizer._is_redundant(token)) == bool(
            theirs._is_redundant(token)
        )
        assert Tokenizer.stem(token) == theirs.stem(token)
    assert Tokenizer._cjk_punctuation() == theirs._cjk_punctuation()


def test_ids_and_attributes_equal_bert4keras(token_dict):
    ours = Tokenizer(token_dict, do_lower_case=True)
    theirs = reference.tokenizers().Tokenizer(token_dict, do_lower_case=True)
    text, title = "用BERT做Σ标题生成\ue000", "标题ΑΣ"
    assert ours.encode(text, title, maxlen=12) == theirs.encode(
        text, title, maxlen=12
    )
    for name in ("_token_end_id", "_token_start_id", "_vocab_size"):
        assert getattr(ours, name) == getattr(theirs, name)


def test_max_length_of_older_scripts(token_dict):
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    text = "一二三四五六七八九十"
    assert tokenizer.encode(text, max_length=6) == tokenizer.encode(
        text, maxlen=6
    )
    assert tokenizer.tokenize(text, max_length=4) == tokenizer.tokenize(text, 4)
    with pytest.raises(TypeError, match="not both"):
        tokenizer.encode(text, maxlen=5, max_length=6)


def test_sentencepiece_tokenizer_is_ported():
    from compat.tokenizers import SpTokenizer
    from compat.tokenizers import TokenizerBase

    assert issubclass(SpTokenizer, TokenizerBase)
    assert issubclass(Tokenizer, TokenizerBase)
