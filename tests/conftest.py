"""Fixtures shared by every test module (the rest: `tests/common.py`)."""

import pytest

from tests.common import CSL_DEV
from tests.common import VOCAB_DIR
from tests.common import require_shared


@pytest.fixture
def vocab_path():
    return require_shared(VOCAB_DIR / "vocab.txt")


@pytest.fixture
def csl_dev_path():
    return require_shared(CSL_DEV)
