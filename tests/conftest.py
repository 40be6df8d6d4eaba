"""Fixtures shared by every test module (the rest: `tests/common.py`)."""

import keras
import pytest

from tests.common import CSL_DEV
from tests.common import VOCAB_DIR
from tests.common import one_backend_skip
from tests.common import require_shared


def pytest_collection_modifyitems(items):
    """Skip tests marked `one_backend` under the other backend, with a
    reason that names the backend that runs them."""
    backend = keras.backend.backend()
    for item in items:
        marker = item.get_closest_marker("one_backend")
        if marker is None:
            continue
        reason = one_backend_skip(marker, backend)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def vocab_path():
    return require_shared(VOCAB_DIR / "vocab.txt")


@pytest.fixture
def csl_dev_path():
    return require_shared(CSL_DEV)
