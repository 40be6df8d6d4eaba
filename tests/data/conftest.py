"""Fixtures for data tests: a hand-made vocabulary and the real one."""

import pytest

from data.tokenizer import Tokenizer
from tests.conftest import VOCAB_DIR
from tests.conftest import require_shared

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Enough to write Chinese test sentences and a few Latin words.
CHARACTERS = "一二三四五六七八九十甲乙丙丁戊己庚辛壬癸中文标题生成的，。"
WORDS = [
    "abc",
    "##de",
    "##f",
    "##a",
    "hello",
    "world",
    "bert",
    "##4",
    "##keras",
]


@pytest.fixture
def tiny_token_dict():
    tokens = SPECIALS + list(CHARACTERS) + WORDS + list("abcdefghxyz")
    return {token: i for i, token in enumerate(tokens)}


@pytest.fixture
def tiny_tokenizer(tiny_token_dict):
    return Tokenizer(tiny_token_dict, do_lower_case=True)


@pytest.fixture(scope="session")
def real_tokenizer():
    """The uncased Chinese BERT vocab, loaded once (21,128 tokens)."""
    path = require_shared(VOCAB_DIR / "vocab.txt")
    return Tokenizer(path, do_lower_case=True)
