"""The per-backend pieces: compiled functions, fit input, nested gradients."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from models import backend


def test_steps_and_support_follow_the_backend():
    backend.check_supported()  # tensorflow and jax: no error
    expected = {
        "tensorflow": backend.TensorFlowSteps,
        "jax": backend.JaxSteps,
    }[keras.backend.backend()]
    assert backend.Steps is expected


def test_one_device_outside_a_distribution():
    assert backend.replicas_in_scope() == 1
    assert backend.process_count() == 1
    value = ops.convert_to_tensor(3.0)
    assert float(backend.replica_sum(value)) == 3.0


@pytest.mark.parametrize("jit_compile", [True, False])
def test_compiled_function_reads_current_weights(jit_compile):
    """Same values as eager; weights assigned after compiling are used
    without a new trace (JAX passes them as arguments)."""
    variable = keras.Variable(np.ones(3, "float32"))
    traces = []

    def fn(x):
        traces.append(1)
        return ops.sum(x * variable)

    compiled = backend.compile_function(fn, [variable], jit_compile)
    x = np.arange(3, dtype="float32")
    assert float(compiled(x)) == float(fn(x)) == 3.0
    variable.assign(np.full(3, 2.0, "float32"))
    assert float(compiled(x)) == 6.0
    if jit_compile:
        assert len(traces) == 2  # one trace, one eager call above


def test_fit_input_takes_batches_of_every_length():
    """On TensorFlow a tf.data pipeline whose length axis is free (the
    PyDataset adapter fixes it from the first batches); elsewhere the
    batches themselves."""

    class Batches(keras.utils.PyDataset):
        lengths = (3, 3, 5)

        def __len__(self):
            return len(self.lengths)

        def __getitem__(self, index):
            ids = np.full((2, self.lengths[index]), index + 1, "int32")
            return ((ids, ids),)

    batches = Batches()
    data = backend.fit_input(batches)
    if keras.backend.backend() != "tensorflow":
        assert data is batches
        return
    got = [tuple(t.shape) for ((t, _),) in data.as_numpy_iterator()]
    assert got == [(2, 3), (2, 3), (2, 5)]


def test_value_and_grad_inside_a_loss():
    variable = keras.Variable(np.array([1.0, 2.0, -1.0], "float32"))

    def cube():
        return ops.sum(variable**3)

    value, grad = backend.value_and_grad(cube, variable, [variable])
    assert float(value) == pytest.approx(8.0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(grad), [3.0, 12.0, 3.0], rtol=1e-6
    )


def test_overridden_reads_the_value_then_restores_it():
    variable = keras.Variable(np.array([1.0, 2.0], "float32"))
    original = ops.convert_to_numpy(variable)
    with backend.overridden(variable, np.array([5.0, 7.0], "float32"), []):
        inside = ops.convert_to_numpy(ops.sum(variable * 1.0))
    assert float(inside) == 12.0
    np.testing.assert_array_equal(ops.convert_to_numpy(variable), original)


def test_free_device_memory_is_unknown_on_a_cpu():
    assert backend.free_device_memory() is None


def test_peak_memory_counts_what_was_allocated_on_an_accelerator():
    """At least a 64 MiB tensor allocated after the reset on a GPU; not
    measured (None) on a CPU."""
    backend.reset_peak_memory()
    ones = ops.ones((16, 1024, 1024), "float32")  # 64 MiB
    ops.convert_to_numpy(ops.sum(ones))
    peak = backend.peak_memory_bytes()
    on_gpu = any(kind == "gpu" for kind, _, _ in backend.local_devices())
    if not on_gpu:
        assert peak is None
        return
    assert peak >= 64 * 2**20


@pytest.mark.slow
def test_compilation_cache_keeps_compiled_programs(tmp_path):
    """JAX writes what it compiles to the directory (a fresh process, so
    the setting does not leak into other tests); other backends say no."""
    script = (
        "import jax, keras\n"
        "from models import backend\n"
        f"assert backend.enable_compilation_cache({str(tmp_path)!r})\n"
        "print(jax.jit(lambda x: x * 2 + 1)(keras.ops.ones((3,))))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(tmp_path.iterdir())
    if keras.backend.backend() != "jax":
        assert backend.enable_compilation_cache(tmp_path) is False
