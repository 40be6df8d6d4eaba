"""One run as several processes (`tasks/lib/launch.py`), with real ones.

Quick: bad launch input stops in one line before Keras starts. Slow: two
`csl_title.py` processes on localhost (JAX, one CPU device each, Gloo
collectives) train one run; when process 1 is killed after the first
epoch, process 0 stops too (one line, exit status 4) instead of waiting;
started again, both resume, and the run ends with the losses, the
weights and the test scores of one process on the same global batches.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.common import ROOT
from tests.common import TINY_RUN_ARGS

SCRIPT = str(ROOT / "tasks" / "csl_title.py")
# The tiny default for three epochs (the later --epochs wins): about 30
# steps an epoch.
RUN_ARGS = [*TINY_RUN_ARGS, "--epochs", "3", "--beams", "1"]
# The processes run on JAX whichever backend runs the tests: under
# TensorFlow the slow runs would repeat those under JAX.
ON_JAX = pytest.mark.one_backend(
    "jax", reason="its processes run on JAX whatever the tests' backend"
)
# float32 round-off: the two processes sum the gradient in another order.
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def environment(**variables):
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax")
    for name in list(env):
        if name.startswith("KERAS_DISTRIBUTION_"):
            del env[name]
    return {**env, **variables}


def launch(*argv, env=None):
    """The script with `argv`, not waited for."""
    return subprocess.Popen(
        [sys.executable, SCRIPT, *argv],
        cwd=ROOT,
        env=env or environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# Quick: bad launch input --------------------------------------------------


def refused(*argv, env=None):
    """The one line the script answers `argv` with (exit status 2)."""
    done = subprocess.run(
        [sys.executable, SCRIPT, *argv],
        cwd=ROOT,
        env=env or environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--process-id", "2"], "--process-id 2: expected an id from 0 to 1"),
        (["--process-id", "-1"], "--process-id -1: expected an id from 0"),
        (["--process-id", "0", "--batch-size", "3"], "expected a multiple"),
        (["--num-processes", "0"], "--num-processes 0: expected 1 or more"),
    ],
)
def test_bad_launch_input_one_line(argv, expected):
    line = refused(
        "--coordinator", "127.0.0.1:1", "--num-processes", "2", *argv
    )
    assert expected in line


def test_process_id_from_environment_checked_too():
    env = environment(
        KERAS_DISTRIBUTION_JOB_ADDRESSES="127.0.0.1:1",
        KERAS_DISTRIBUTION_NUM_PROCESSES="2",
        KERAS_DISTRIBUTION_PROCESS_ID="5",
    )
    assert "--process-id 5: expected an id from 0 to 1" in refused(env=env)


def test_several_processes_need_a_coordinator():
    line = refused("--num-processes", "2", "--process-id", "0")
    assert "needs --coordinator HOST:PORT" in line


def test_unreachable_coordinator_times_out_in_one_line():
    started = time.monotonic()
    line = refused(
        "--coordinator",
        f"127.0.0.1:{free_port()}",
        "--num-processes",
        "2",
        "--process-id",
        "1",
        "--coordinator-timeout",
        "1",
    )
    assert "nothing answered within 1s" in line
    assert time.monotonic() - started < 30


def test_tensorflow_refuses_several_processes():
    line = refused(
        "--coordinator",
        "127.0.0.1:1",
        "--num-processes",
        "2",
        "--process-id",
        "0",
        env=environment(KERAS_BACKEND="tensorflow"),
    )
    assert "runs on JAX only" in line


# Slow: two real processes --------------------------------------------------


def two_processes(out, port):
    """Processes 0 and 1 of one run into `out`."""
    return [
        launch(
            *RUN_ARGS,
            "--out",
            str(out),
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            "2",
            "--process-id",
            str(index),
            "--coordinator-timeout",
            "120",
        )
        for index in range(2)
    ]


def finish(processes, timeout=900):
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


def kill_after_first_epoch(processes, out, timeout=600):
    """SIGKILL process 1 once epoch 1's checkpoint is written; returns
    what process 0, which stops then, said."""
    deadline = time.monotonic() + timeout
    state = out / "state.json"
    while time.monotonic() < deadline:
        if state.is_file() and json.loads(state.read_text())["epochs_done"]:
            break
        assert all(p.poll() is None for p in processes), [
            p.communicate()[0][-3000:] for p in processes
        ]
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)
    processes[1].communicate()
    output = processes[0].communicate(timeout=300)[0]
    assert processes[0].returncode == 4, output[-3000:]
    assert json.loads(state.read_text())["epochs_done"] < 3
    return output


def weights(path):
    """Every array of a .weights.h5 file, by name."""
    found = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: (
                found.setdefault(name, np.array(item))
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return found


def scores(results):
    return {
        beam: {k: v for k, v in metrics.items() if "seconds" not in k}
        for beam, metrics in results["test"].items()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process; two processes killed after epoch 1, then resumed."""
    root = tmp_path_factory.mktemp("processes")
    alone, together = root / "one", root / "two"
    single = launch(*RUN_ARGS, "--out", str(alone))
    port = free_port()
    stopped = kill_after_first_epoch(two_processes(together, port), together)
    resumed = finish(two_processes(together, port))
    finish([single])
    return alone, together, resumed, stopped


@pytest.mark.slow
@ON_JAX
def test_a_dead_process_stops_the_other_in_one_line(runs):
    *_, stopped = runs
    line = stopped.strip().splitlines()[-1]
    assert line.startswith("csl_title.py: error: another of the 2 processes")
    assert "start every process again to resume" in line


@pytest.mark.slow
@ON_JAX
def test_two_processes_resume_after_all_stopped(runs):
    _, together, outputs, _ = runs
    for output in outputs:
        assert f"Resuming {together} after epoch 1." in output


@pytest.mark.slow
@ON_JAX
def test_only_process_zero_writes(runs):
    _, together, outputs, _ = runs
    assert "Test results" in outputs[0]
    assert "Test results" not in outputs[1]
    assert not list(together.glob("*tmp*"))


@pytest.mark.slow
@ON_JAX
def test_two_processes_equal_one(runs):
    alone, together, *_ = runs
    one, two = (
        json.loads((path / "results.json").read_text())
        for path in (alone, together)
    )
    assert scores(two) == scores(one)
    assert two["best_epoch"] == one["best_epoch"]
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train"]["loss"] == pytest.approx(a["train"]["loss"], 1e-5)
        assert b["bleu"] == a["bleu"]
    single, double = (weights(path / "epoch-3.weights.h5") for path in runs[:2])
    assert single.keys() == double.keys()
    for name, value in single.items():
        np.testing.assert_allclose(double[name], value, atol=TOLERANCE)
