"""The tiny checkpoint and the CSL pairs the ported scripts load."""

import pytest

from tests.common import CSL_DEV
from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.compat.scripts import write_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    pytest.importorskip("tensorflow")  # writes Google's TF checkpoint
    vocab = require_shared(VOCAB_DIR / "vocab.txt")
    size = len(vocab.read_text(encoding="utf-8").splitlines())
    return write_checkpoint(tmp_path_factory.mktemp("tiny_bert"), size)


@pytest.fixture(scope="module")
def csl_rows():
    """CSL pairs whose titles hold "的" (see `write_checkpoint`)."""
    lines = require_shared(CSL_DEV).read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines]  # to title, abstract, title
    return [row for row in rows if "的" in row[2]]
