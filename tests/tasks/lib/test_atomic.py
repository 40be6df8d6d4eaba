"""When the world misbehaves, quickly: failed writes, a full disk, signals
during a write, two owners of one run directory, a loss that is not
finite. The same cases on real runs are in tests/tasks/test_world.py."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

from tasks.lib import atomic
from tasks.lib.atomic import atomic_save_weights
from tasks.lib.atomic import atomic_write_json
from tasks.lib.atomic import atomic_write_text
from tasks.lib.atomic import check_weights_file
from tasks.lib.atomic import deferred_signals
from tasks.lib.atomic import replacing
from tasks.lib.cli import DIVERGED_STATUS
from tasks.lib.cli import Diverged
from tasks.lib.cli import one_line
from tasks.lib.cli import raise_if_interrupted
from tasks.lib.cli import run_main
from tasks.lib.cli import signals_at_safe_points
from tasks.lib.divergence import StopOnNonFiniteLoss
from tasks.lib.divergence import diverged
from tasks.lib.rundir import LOCK_FILE
from tasks.lib.rundir import RunDirectory
from tests.common import ROOT


def small_model():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old")
    with pytest.raises(OSError) as caught:
        with replacing(path) as temporary:
            temporary.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    line = one_line(caught.value)
    assert line.startswith(f"{path}: No space left on device")
    assert "run the same command again" in line
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_write_into_a_missing_folder_is_one_line(tmp_path):
    path = tmp_path / "gone" / "table.md"
    with pytest.raises(OSError) as caught:
        atomic_write_text(path, "text")
    assert one_line(caught.value).startswith(f"{path}: No such file")


def test_json_refuses_nan_and_infinity(tmp_path):
    for value in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="results.json"):
            atomic_write_json(tmp_path / "results.json", {"bleu": value})
    assert not any(tmp_path.iterdir())


def test_weights_that_cannot_fit_are_refused_before_hdf5_writes(
    tmp_path, monkeypatch
):
    """HDF5 may take the process down on a full disk: the space is checked
    first, and the previous file stays whole."""
    model = small_model()
    path = tmp_path / "best.weights.h5"
    atomic_save_weights(model, path)
    before = path.read_bytes()
    usage = atomic.shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: usage)
    with pytest.raises(OSError) as caught:
        atomic_save_weights(model, path)
    assert caught.value.errno == errno.ENOSPC
    assert one_line(caught.value).startswith(f"{path}: No space left")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_weights_file_is_read_back_before_it_counts(tmp_path):
    model = small_model()
    path = tmp_path / "w.weights.h5"
    atomic_save_weights(model, path)
    check_weights_file(path, len(model.weights))
    with pytest.raises(OSError, match="2 variables written, expected 1 to 1"):
        check_weights_file(path, 1)
    empty = tmp_path / "empty.weights.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(OSError, match="0 variables written"):
        check_weights_file(empty, 2)
    cut = tmp_path / "cut.weights.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(OSError):
        check_weights_file(cut, 2)


def test_a_signal_during_a_write_waits_for_it(tmp_path):
    path = tmp_path / "state.json"
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run: held, not raised
            atomic_write_json(path, {"epochs_done": 2})
            written = True
    assert written
    assert json.loads(path.read_text()) == {"epochs_done": 2}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_and_ctrl_c_exit_with_the_shells_status(capsys):
    for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):

        def interrupted():
            os.kill(os.getpid(), signum)
            time.sleep(5)

        with pytest.raises(SystemExit) as stop:
            run_main(interrupted, prog="csl_title.py")
        # A second Ctrl-C would now end the process at once.
        assert signal.getsignal(signal.SIGINT) is not (
            signal.default_int_handler
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert stop.value.code == status
        line = capsys.readouterr().err.strip()
        assert line == (
            f"Interrupted ({signal.Signals(signum).name}): run the same "
            "command again to resume after the last finished checkpoint."
        )
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_signal_whose_exception_a_library_lost_still_stops_the_run(
    capsys,
):
    # jaxlib can run the handler while it waits for a device and drop
    # what it raised; the loop's next check must stop the run anyway.
    steps = []

    def swallowing_loop():
        for step in range(3):
            try:
                if step == 0:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)
            except KeyboardInterrupt:
                pass  # what the library does
            steps.append(step)
            raise_if_interrupted()

    with pytest.raises(SystemExit) as stop:
        run_main(swallowing_loop, prog="csl_title.py")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.code == 143
    assert steps == [0]
    assert "Interrupted (SIGTERM)" in capsys.readouterr().err
    # The next run of the process starts with no signal recorded.
    assert run_main(lambda: "done", prog="csl_title.py") == "done"


def test_a_signal_in_a_finalizer_stops_the_run_without_a_traceback(
    capsys, monkeypatch
):
    # Python can only drop what a handler raises inside a finalizer or a
    # garbage-collection callback (jaxlib registers one).
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

    reported = []  # what Python would print as 'Exception ignored in'
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    steps = []

    def loop():
        for step in range(3):
            Finalized()
            steps.append(step)
            raise_if_interrupted()

    with pytest.raises(SystemExit) as stop:
        run_main(loop, prog="csl_title.py")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.code == 130
    assert steps == [0]
    assert reported == []
    assert sys.unraisablehook == reported.append
    err = capsys.readouterr().err
    assert err.strip().startswith("Interrupted (SIGINT)")


def test_in_a_library_a_signal_waits_for_the_next_safe_point(capsys):
    # Raised inside TensorFlow while it traces a function, the exception
    # breaks TensorFlow's context stack; in the block it is only recorded.
    steps = []

    def loop():
        with signals_at_safe_points():
            for step in range(3):
                if step == 0:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)  # the handler has run: nothing raised
                steps.append(step)
                if step == 1:
                    raise_if_interrupted()

    with pytest.raises(SystemExit) as stop:
        run_main(loop, prog="csl_title.py")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.code == 143
    assert steps == [0, 1]
    assert "Interrupted (SIGTERM)" in capsys.readouterr().err


def test_a_signal_recorded_in_the_block_is_raised_when_it_ends(capsys):
    def block_then_more():
        with signals_at_safe_points():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        raise AssertionError("not reached: the block's end raises")

    with pytest.raises(SystemExit) as stop:
        run_main(block_then_more, prog="csl_title.py")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.code == 130


def test_a_second_signal_in_the_block_stops_at_once():
    code = (
        "import os, signal, time\n"
        "from tasks.lib.cli import run_main, signals_at_safe_points\n"
        "def training():\n"
        "    with signals_at_safe_points():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.2)\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "run_main(training, prog='csl_title.py')\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 130, result.stderr
    assert "Interrupted again: stopping at once." in result.stderr
    assert time.monotonic() - started < 4


def test_a_signal_lost_in_the_last_step_still_sets_the_exit_status():
    def finishing():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        return "finished"

    with pytest.raises(SystemExit) as stop:
        run_main(finishing, prog="csl_title.py")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.value.code == 130


def test_a_diverged_run_exits_3_in_one_line(capsys):
    error = diverged({"epoch": 2, "step": 7}, float("nan"), "--warmup", "kept")

    def diverging():
        raise error

    with pytest.raises(SystemExit) as stop:
        run_main(diverging, prog="csl_title.py")
    assert stop.value.code == DIVERGED_STATUS == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "diverged at epoch 2, step 7 (loss nan)" in lines[0]
    assert "lower --lr" in lines[0] and "--warmup" in lines[0]
    assert error.details == {
        "epoch": 2,
        "step": 7,
        "loss": "nan",
        "where": "epoch 2, step 7",
    }
    assert isinstance(error, Diverged)


def test_the_loss_watch_stops_fit_at_the_first_bad_step():
    model = small_model()
    model.compile(optimizer="sgd", loss="mse")
    watch = StopOnNonFiniteLoss()
    watch.set_model(model)
    watch.on_train_batch_end(0, {"loss": 1.5})
    assert watch.step is None and not model.stop_training
    watch.on_train_batch_end(4, {"loss": np.float32("inf")})
    assert (watch.step, watch.loss) == (5, float("inf"))
    assert model.stop_training


OWNER = """
import sys, time
from tasks.lib.rundir import RunDirectory
with RunDirectory(sys.argv[1], create=False).owned():
    print("owned", flush=True)
    time.sleep(60)
"""


def test_a_run_directory_has_one_owner_until_it_dies(tmp_path):
    """A second owner is refused in one line naming the folder and the
    process; once that process is killed (-9), the directory is taken
    over."""
    out = tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline() == "owned\n"
        with pytest.raises(SystemExit) as refused:
            with RunDirectory(out).owned():
                pass
        assert refused.value.code == (
            f"error: --out {out} is in use by another run (process "
            f"{owner.pid}); wait for it to end, or give another --out"
        )
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    with RunDirectory(out, create=False).owned():
        assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert not (out / LOCK_FILE).exists()


def test_a_new_owner_removes_the_writes_a_killed_one_left_unfinished(
    tmp_path,
):
    """kill -9 during a write leaves its temporary file (the file it was to
    replace is whole); the next owner removes it and keeps the rest."""
    out = tmp_path / "run"
    out.mkdir()
    left = [out / "tmp-epoch-5.weights.h5", out / ".state.json.tmp"]
    kept = [out / "epoch-4.weights.h5", out / "state.json"]
    for path in left + kept:
        path.write_text("x")
    with RunDirectory(out, create=False).owned():
        assert not any(path.exists() for path in left)
        assert all(path.read_text() == "x" for path in kept)


def test_a_directory_made_for_a_refused_run_is_removed(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ValueError):
        with RunDirectory(out, create=False).owned():
            raise ValueError("bad input")
    assert not out.exists()
    kept = tmp_path / "kept"
    with pytest.raises(ValueError):
        with RunDirectory(kept, create=False).owned():
            (kept / "vocab.txt").write_text("[PAD]\n")
            raise ValueError("failed later")
    assert [p.name for p in kept.iterdir()] == ["vocab.txt"]
