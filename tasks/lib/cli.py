"""What every script's command line shares: help that shows real defaults,
quiet start-up, and bad input answered in one line.

A user's mistake (a bad option, a missing or broken file) must cost one
line naming the culprit and what was expected, never a traceback and
never a training run: `run_main` turns the errors of bad input into that
line and exit status 2, before anything was trained or written.

TensorFlow prints start-up chatter from C++ as soon as it is imported, so
`quiet` must run before the first `import keras`; `tasks/__init__.py`
calls it, which every script imports (directly or through `tasks.lib`)
before anything that imports Keras. `--verbose` on the command line keeps
all of it.
"""

import argparse
import contextlib
import gc
import importlib.abc
import importlib.util
import logging
import os
import signal
import sys
import threading
import warnings

# Keras warnings that are harmless here, and alarming: the task scripts
# order their own batches (so `shuffle` is left to them) and hand `fit`
# exactly one epoch of batches per call.
HARMLESS_WARNINGS = (
    r"`shuffle=True` was passed, but will be ignored",
    r"Your input ran out of data",
)


def quiet(verbose=None):
    """Silence TensorFlow/absl start-up chatter, tf.function retracing
    notices and `HARMLESS_WARNINGS`, unless `verbose` (by default: when
    `--verbose` is on the command line). Real warnings still show."""
    if verbose is None:
        verbose = "--verbose" in sys.argv[1:]
    if verbose:
        return
    # C++ logs of TensorFlow and XLA: INFO and WARNING (errors stay).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Python logs of TensorFlow, e.g. "triggered tf.function retracing".
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    warnings.formatwarning = _one_line_warning
    if "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _SilentImport("tensorflow"))


def _one_line_warning(message, category, filename, lineno, line=None):
    """'warning: MESSAGE', without the file, line and source that Python
    shows (--verbose keeps them)."""
    kind = "warning" if category is UserWarning else category.__name__
    return f"{kind}: {message}\n"


class _SilentImport(importlib.abc.MetaPathFinder):
    """Import one package with the process's stderr closed.

    TensorFlow's C++ start-up lines ("oneDNN custom operations are on",
    "All log messages before absl::InitializeLog()...") are written before
    its logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says; Python
    errors of the import still show, as they are raised after stderr is
    back.
    """

    def __init__(self, name):
        self.name = name

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with _stderr_closed():
                run(module)

        spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def _stderr_closed():
    """File descriptor 2 to /dev/null: C++ writes there, not to sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class HelpFormatter(
    argparse.RawDescriptionHelpFormatter,
    argparse.ArgumentDefaultsHelpFormatter,
):
    """The help of every script: the description's line breaks kept (usage
    examples stay readable), and a default shown only where it says
    something: not for flags (`--no-progress (default: True)`), not for
    options without a default (`(default: None)`), and not twice."""

    def _get_help_string(self, action):
        default = action.default
        if (
            action.nargs == 0
            or default is None
            or default == []
            or default is argparse.SUPPRESS
            or "default" in (action.help or "")
        ):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are one line (argparse
    prints the whole usage first), pointing at --help, and whose help is
    `HelpFormatter`'s."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """`(argv, extra)`: the arguments before `--`, and those after it that
    a script hands on to another one."""
    if "--" not in argv:
        return list(argv), []
    split = argv.index("--")
    return argv[:split], argv[split + 1 :]


def add_verbose(parser):
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the backend's start-up logs and Keras's notices "
        "(hidden by default)",
    )


class UsageError(SystemExit):
    """Bad input a user can fix: its message is the one line shown.

    A `SystemExit`, so that even where no `run_main` catches it, Python
    prints the message alone (no traceback) and exits non-zero."""


def fail(message):
    """Stop with one line, 'error: MESSAGE' (exit status 2)."""
    raise UsageError(f"error: {message}")


def check_at_least(bounds):
    """`{'--flag': (value, least)}`: the first value below its least (None:
    not given) stops with one line naming the flag."""
    for flag, (value, least) in bounds.items():
        values = value if isinstance(value, list) else [value]
        for one in values:
            if one is not None and one < least:
                fail(f"{flag} {one}: expected {least} or more")


def check_files(paths):
    """`{'--flag': path}`: a path given but not a file stops in one line."""
    for flag, path in paths.items():
        if path is not None and os.path.isdir(path):
            fail(f"{flag} {path}: a directory; expected a file")
        if path is not None and not os.path.isfile(path):
            fail(f"{flag} {path}: no such file")


class Diverged(Exception):
    """Training met a loss that is not a number (NaN) or infinite: the
    run stops, its last good checkpoint kept; the message is one line."""


# Exit statuses besides 0 and bad input's 2: a diverged run, and the
# shell's 128 + signal for Ctrl-C (SIGINT, 130) and SIGTERM (143).
DIVERGED_STATUS = 3


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: both stop a run the same way (`signum` says
    which)."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__()
        self.signum = signum


# Signals received by this process, oldest first, and how deep the code
# is in `signals_at_safe_points` blocks.
_received: list[int] = []
_safe_points = {"depth": 0}


def _raise_interrupted(signum, frame):
    if _safe_points["depth"] and _received:
        sys.stderr.write("\nInterrupted again: stopping at once.\n")
        os._exit(128 + signum)
    _received.append(signum)
    if not _safe_points["depth"]:
        raise Interrupted(signum)


def interrupted() -> bool:
    """Whether SIGINT or SIGTERM has been received."""
    return bool(_received)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` again for a signal already received.

    The handler raises where the main thread is, and there Python may
    have to drop the exception: in a garbage-collection callback (jaxlib
    registers one, and allocations run it anywhere), a `__del__` or a
    weakref callback. The run would train on to the end. The loops call
    this at safe points (every training step, after every checkpoint), so
    a received signal always stops the run."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def signals_at_safe_points():
    """Within the block a signal is recorded, not raised where it lands.

    Training runs inside libraries: an exception raised in TensorFlow
    while it traces a function breaks its context stack (an
    AssertionError, not a resumable stop), and jaxlib can drop one. In
    the block the code stops at its own safe points instead
    (`raise_if_interrupted`; `fit` through a callback that sets
    `stop_training`), and at the latest when the block ends. A second
    signal stops the process at once."""
    _safe_points["depth"] += 1
    try:
        yield
    finally:
        _safe_points["depth"] -= 1
    raise_if_interrupted()


@contextlib.contextmanager
def _signals_interrupt():
    """SIGINT and SIGTERM raise `Interrupted` for the block, and are
    recorded for `raise_if_interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    numbers = (signal.SIGINT, signal.SIGTERM)
    previous = {n: signal.signal(n, _raise_interrupted) for n in numbers}
    report_unraisable = sys.unraisablehook

    def drop_interrupted(unraisable):
        # Recorded: raised again at the next safe point, not a traceback.
        if not isinstance(unraisable.exc_value, Interrupted):
            report_unraisable(unraisable)

    sys.unraisablehook = drop_interrupted
    try:
        yield
    finally:
        sys.unraisablehook = report_unraisable
        for number, handler in previous.items():
            signal.signal(number, handler)


# What bad input raises below a script: missing or unreadable files
# (OSError), malformed content or values (ValueError, including
# UnicodeDecodeError, json's JSONDecodeError and the readers' own errors).
INPUT_ERRORS = (OSError, ValueError)


def run_main(function, *args, prog=None):
    """`function(*args)`, with bad input answered in one line on stderr
    (exit status 2), a diverged run in one line (3), Ctrl-C and SIGTERM
    in one line saying how to resume (130, 143). A message is one line
    unless it is a list on purpose (`--model NAME`'s download steps)."""
    try:
        with _signals_interrupt():
            result = function(*args)
            # A signal whose exception was lost stops the process anyway.
            raise_if_interrupted()
            return result
    except SystemExit as stop:
        # `fail`, or any SystemExit("error: ...") of the library (exit
        # codes pass through).
        if not isinstance(stop.code, str):
            raise
        sys.stderr.write(f"{prog or _prog()}: {stop.code.strip()}\n")
        sys.exit(2)
    except INPUT_ERRORS as error:
        sys.stderr.write(f"{prog or _prog()}: error: {one_line(error)}\n")
        sys.exit(2)
    except Diverged as error:
        sys.stderr.write(f"{prog or _prog()}: error: {one_line(error)}\n")
        sys.exit(DIVERGED_STATUS)
    except KeyboardInterrupt as interrupt:
        signum = getattr(interrupt, "signum", signal.SIGINT)
    # Out of the except block, so that the interrupted frames (and the
    # data pipelines they hold) go now, not after Python is gone, which
    # has TensorFlow print errors of its own at exit.
    _interrupted(signum)


def _interrupted(signum):
    """One line saying how to resume; exit 128 + signal. A second Ctrl-C
    while the process ends stops it at once."""
    gc.collect()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(128 + signal.SIGINT))
    name = signal.Signals(signum).name
    sys.stderr.write(
        f"\nInterrupted ({name}): run the same command again to resume "
        "after the last finished checkpoint.\n"
    )
    sys.exit(128 + signum)


def one_line(error):
    """The message of `error` on one line (KeyError quotes its key)."""
    text = str(error.args[0]) if error.args else type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    text = " ".join(text.split())
    return text or type(error).__name__


def _prog():
    return os.path.basename(sys.argv[0]) or "error"
