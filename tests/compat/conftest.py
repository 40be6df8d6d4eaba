"""The tiny checkpoint the ported scripts load (Google's TF layout)."""

import pytest

from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.compat.scripts import write_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    pytest.importorskip("tensorflow")  # writes Google's TF checkpoint
    vocab = require_shared(VOCAB_DIR / "vocab.txt")
    size = len(vocab.read_text(encoding="utf-8").splitlines())
    return write_checkpoint(tmp_path_factory.mktemp("tiny_bert"), size)
