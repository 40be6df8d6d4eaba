"""Fixtures for data tests: a hand-made vocabulary and the real one."""

import pytest

from data.tokenizer import Tokenizer
from data.vocab import SPECIAL_TOKENS
from tests.common import CHARACTERS
from tests.common import VOCAB_DIR
from tests.common import WORDS
from tests.common import require_shared


@pytest.fixture
def tiny_token_dict():
    tokens = [*SPECIAL_TOKENS, *CHARACTERS, *WORDS, *"abcdefghxyz"]
    return {token: i for i, token in enumerate(tokens)}


@pytest.fixture
def tiny_tokenizer(tiny_token_dict):
    return Tokenizer(tiny_token_dict, do_lower_case=True)


@pytest.fixture(scope="session")
def real_tokenizer():
    """The uncased Chinese BERT vocab, loaded once (21,128 tokens)."""
    path = require_shared(VOCAB_DIR / "vocab.txt")
    return Tokenizer(path, do_lower_case=True)
