"""The `one_backend` marker (tests/conftest.py): a marked test runs under
the backend it names and skips under the other, saying which runs it."""

import keras
import pytest

from tests.common import one_backend_skip

WHY = "checks the marker itself"


@pytest.mark.one_backend("tensorflow", reason=WHY)
def test_a_test_for_tensorflow_runs_under_tensorflow_only():
    assert keras.backend.backend() == "tensorflow"


@pytest.mark.one_backend("jax", reason=WHY)
def test_a_test_for_jax_runs_under_jax_only():
    assert keras.backend.backend() == "jax"


def test_the_skip_names_the_backend_that_runs_the_test():
    marker = pytest.mark.one_backend("jax", reason="tested in-process").mark
    assert one_backend_skip(marker, "jax") is None
    assert one_backend_skip(marker, "tensorflow") == (
        "runs on KERAS_BACKEND=jax only: tested in-process"
    )


def test_an_unknown_backend_or_no_reason_is_refused():
    with pytest.raises(ValueError, match=r"one_backend\('torch'\): expected"):
        one_backend_skip(
            pytest.mark.one_backend("torch", reason=WHY).mark, "jax"
        )
    with pytest.raises(ValueError, match="needs a reason="):
        one_backend_skip(pytest.mark.one_backend("jax").mark, "jax")
