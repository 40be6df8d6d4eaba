"""The one way a run writes a file: whole or not at all, and a failure is an
error naming the file and the cause.

Every file goes to a temporary name beside its target and is renamed over
it (`os.replace`) only once complete, so an interruption (Ctrl-C, SIGTERM,
kill -9, a full disk) leaves the previous version in place. A write that
fails removes its temporary file and raises `OSError(errno, cause, path)`,
which the scripts show as one line ('PATH: No space left on device ...').
SIGINT and SIGTERM that arrive during a write are held until it is done
(`deferred_signals`); a second one stops at once.

In a run of several processes, all but process 0 compute the same and
write nothing (`discard_writes`): their writes go to a temporary folder
that is removed, so the code that writes is the same in every process.
"""

import contextlib
import csv
import errno
import io
import json
import os
import pathlib
import re
import shutil
import signal
import sys
import tempfile
import threading

import numpy as np

# What the user reads after the cause of a failed write.
AFTER_FAILED_WRITE = (
    "the previous version of the file is kept; fix this and run the same "
    "command again"
)
# HDF5 bookkeeping per variable and per file, over the values themselves.
HDF5_PER_VARIABLE = 8192
HDF5_PER_FILE = 1 << 20

_held = {"depth": 0, "pending": []}
# Where this process's writes go when it writes nothing (`discard_writes`).
_discarded = {"folder": None}


def discard_writes() -> None:
    """From now on, files this process writes are thrown away."""
    if _discarded["folder"] is None:
        _discarded["folder"] = tempfile.TemporaryDirectory(prefix="discard-")


def writes_enabled() -> bool:
    return _discarded["folder"] is None


def scratch_folder() -> pathlib.Path:
    """The folder where this process's discarded writes go, for a file it
    must write and then read itself (after `discard_writes`)."""
    return pathlib.Path(_discarded["folder"].name)


def _discarded_path(path) -> pathlib.Path:
    """A fresh path in the discard folder, named like `path`."""
    folder = tempfile.mkdtemp(dir=_discarded["folder"].name)
    return pathlib.Path(folder) / pathlib.Path(path).name


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGINT and SIGTERM until the block ends, then deliver them.

    A checkpoint is a few short writes: finishing them costs a moment and
    leaves a resumable run. A second signal during the block exits at
    once (the previous files are still in place). Outside the main thread
    (where no handler can be set) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _held["depth"]:
        _held["depth"] += 1
        try:
            yield
        finally:
            _held["depth"] -= 1
        return
    pending = _held["pending"] = []

    def hold(signum, frame):
        if pending:
            sys.stderr.write("\nInterrupted again: stopping at once.\n")
            os._exit(128 + signum)
        pending.append(signum)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, hold) for number in signals}
    _held["depth"] = 1
    try:
        yield
    finally:
        _held["depth"] = 0
        for number, handler in previous.items():
            signal.signal(number, handler)
        if pending:
            signal.raise_signal(pending[0])


def write_error(path, error: Exception) -> OSError:
    """`error` (of any writer: OS, h5py, NumPy, matplotlib) as an OSError
    naming `path`, its cause and what is left."""
    if isinstance(error, OSError) and error.strerror:
        number, cause = error.errno, error.strerror
    else:
        number = getattr(error, "errno", None) or errno.EIO
        cause = " ".join(str(error).split()) or type(error).__name__
        # HDF5 buries the system's message in a long report.
        found = re.search(r"error message = '([^']*)'", cause)
        cause = found.group(1) if found else cause
    return OSError(number, f"{cause} ({AFTER_FAILED_WRITE})", str(path))


@contextlib.contextmanager
def replacing(path, keep_suffix=False):
    """Yield a temporary path beside `path`; once the block is done it
    replaces `path`. On failure the temporary file goes and the error is
    `write_error`'s. `keep_suffix` for writers that need theirs (Keras
    wants `.weights.h5`)."""
    path = pathlib.Path(path)
    if not writes_enabled():
        temporary = _discarded_path(path)
        yield temporary
        _remove(temporary.parent)
        return
    name = f"tmp-{path.name}" if keep_suffix else f".{path.name}.tmp"
    temporary = path.with_name(name)
    with deferred_signals():
        try:
            yield temporary
            os.replace(temporary, path)
        except Exception as error:
            _remove(temporary)
            if isinstance(error, (ValueError, TypeError)):
                raise  # not the disk's fault: a bug or a bad value
            raise write_error(path, error) from None


def _remove(path):
    if pathlib.Path(path).is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        pathlib.Path(path).unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> None:
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def atomic_write_json(path, value) -> None:
    """JSON, refusing NaN and infinities (not JSON, and never a score):
    ValueError names the file."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    atomic_write_text(path, text + "\n")


def atomic_write_csv(path, fields: list[str], records: list[dict]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(path, buffer.getvalue())


def atomic_save_figure(figure, path, **options) -> None:
    """`figure.savefig`, its format taken from the target's suffix."""
    path = pathlib.Path(path)
    with replacing(path) as temporary:
        figure.savefig(temporary, format=path.suffix[1:], **options)


def check_free_space(path, needed: int) -> None:
    """Refuse a write that cannot fit: the HDF5 writer does not fail
    cleanly on a full disk (it may take the process down)."""
    path = pathlib.Path(path)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (about {needed / 2**20:.1f} MiB "
            f"needed, {free / 2**20:.1f} MiB free; {AFTER_FAILED_WRITE})",
            str(path),
        )


def atomic_save_weights(model, path) -> None:
    """`model.save_weights` through a temporary file, checked before the
    rename: free space first, then the file read back (every variable
    there)."""
    weights = model.weights
    needed = sum(int(np.prod(w.shape)) * _bytes(w.dtype) for w in weights)
    needed += HDF5_PER_VARIABLE * len(weights) + HDF5_PER_FILE
    check_free_space(path, needed)
    with replacing(path, keep_suffix=True) as temporary:
        model.save_weights(str(temporary))
        check_weights_file(temporary, len(weights))


def _bytes(dtype) -> int:
    """Bytes per value (NumPy has no bfloat16)."""
    return 2 if "bfloat16" in str(dtype) else np.dtype(str(dtype)).itemsize


def check_weights_file(path, most: int) -> None:
    """Every dataset of a weights file readable, and some but at most
    `most` of them (a model's weights: Keras leaves out what no layer
    tracks, such as a strategy's own discriminator, saved apart)."""
    import h5py

    found = []

    def read(name, item):
        if isinstance(item, h5py.Dataset):
            found.append(item[()] is not None)

    with h5py.File(path, "r") as handle:
        handle.visititems(read)
    if not 0 < len(found) <= most:
        raise OSError(
            errno.EIO,
            f"{len(found)} variables written, expected 1 to {most}",
        )


def atomic_save_variables(variables, path) -> None:
    """Variables' values, in order, as a NumPy archive."""
    import keras

    values = {
        f"{i:05d}": keras.ops.convert_to_numpy(variable)
        for i, variable in enumerate(variables)
    }
    with replacing(path, keep_suffix=True) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **values)


@contextlib.contextmanager
def atomic_directory(path):
    """Yield a temporary directory that replaces `path` once filled."""
    path = pathlib.Path(path)
    if not writes_enabled():
        temporary = _discarded_path(path)
        temporary.mkdir()
        yield temporary
        _remove(temporary.parent)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    _remove(temporary)
    with deferred_signals():
        try:
            temporary.mkdir(parents=True)
            yield temporary
            _remove(path)
            os.replace(temporary, path)
        except Exception as error:
            _remove(temporary)
            if isinstance(error, (ValueError, TypeError)):
                raise
            raise write_error(path, error) from None


def append_line(path, line: str) -> None:
    """A log line added by rewriting the file: a log is short, and a
    half-written line would break its next reading."""
    path = pathlib.Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, text + line + "\n")
