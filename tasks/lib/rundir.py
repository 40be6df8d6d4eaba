"""The output directory of a run: its one owner, and the resume state.

An interrupted run must lose nothing and never leave a half-written file, so
every file goes through the atomic writes of `tasks.lib.atomic`, and the
state that says which epoch finished is written only after that epoch's
weights are. Two processes writing into one directory would spoil both
runs, so a run owns its directory (`RunDirectory.owned`) before it does
anything else.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import subprocess
import time

import numpy as np

from tasks.lib.atomic import atomic_save_variables
from tasks.lib.atomic import atomic_save_weights
from tasks.lib.atomic import atomic_write_json
from tasks.lib.atomic import deferred_signals
from tasks.lib.atomic import writes_enabled
from tasks.lib.cli import fail

STATE_FILE = "state.json"
# Held (flock) by the process that owns the directory; holds its pid.
LOCK_FILE = ".lock"
# The copy of the state kept with each checkpoint (`epoch-3.state.json`).
CHECKPOINT_STATE = ".state.json"


def _read_state(path, required=("checkpoint",)):
    """A state file, or ValueError when cut short or not a state (a JSON
    object holding the `required` keys)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(state, dict) or not set(required) <= state.keys():
        raise ValueError(f"{path}: not a run state")
    return state


def load_variables(variables, path, what):
    """Assign what `atomic_save_variables` saved, checking count and shapes."""
    with np.load(path) as values:
        if len(values.files) != len(variables):
            raise ValueError(
                f"{path}: {len(values.files)} {what} variables, "
                f"expected {len(variables)}"
            )
        for i, variable in enumerate(variables):
            value = values[f"{i:05d}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{path}: {what} variable {i} ({variable.path}) has "
                    f"shape {value.shape}, expected {tuple(variable.shape)}"
                )
            variable.assign(value)


def atomic_save_optimizer(optimizer, path):
    """The optimizer's variables (step count, moments) as a NumPy archive:
    with them a resumed run continues exactly where it stopped."""
    atomic_save_variables(optimizer.variables, path)


def load_optimizer(trainer, path):
    optimizer = trainer.optimizer
    optimizer.build(trainer.trainable_variables)
    load_variables(optimizer.variables, path, "optimizer")


def strategy_variables(trainer):
    """What the trainer's strategy trains itself, with its own optimizer
    (`Seq2SeqTrainer.strategy_variables`); [] for other trainers."""
    variables = getattr(trainer, "strategy_variables", None)
    return variables() if variables is not None else []


def random_states(trainer):
    """The states of the trainer's random generators (dropout masks, the
    strategies' draws). They are not among Keras's weights: without them a
    resumed run would draw its first epoch's random numbers again."""
    return [v for v in trainer.variables if v.name == "seed_generator_state"]


def git_commit(directory=None):
    """Short hash of the code that ran, with '+dirty' for local changes."""
    directory = directory or pathlib.Path(__file__).resolve().parents[2]
    try:
        commit = _git(directory, "rev-parse", "--short", "HEAD")
        dirty = _git(directory, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _git(directory, *args):
    """What `git ARGS` prints in `directory`, stripped."""
    command = ["git", *args]
    done = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _holder(handle) -> str:
    """The pid the owner wrote into the lock file (it may be writing it
    just now)."""
    for _ in range(20):
        handle.seek(0)
        pid = handle.read().strip()
        if pid:
            return pid
        time.sleep(0.05)
    return "unknown"


def _same_file(handle, path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class RunDirectory:
    """Paths and state of one run under `--out`.

    With `create=False` nothing is written until `create()`, so that a
    script can check its input (and the directory's earlier settings)
    first and leave no trace when it refuses.
    """

    def __init__(self, path, create=True):
        self.path = pathlib.Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path}: not a directory")
        if create:
            self.create()

    def create(self):
        if writes_enabled():  # not a process of a run but the first
            self.path.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def owned(self):
        """Own the directory for the block: another process already
        owning it stops this one at once (one line naming it).

        The lock is an flock, which the system drops when its process
        ends however it ends, so a killed run's directory is taken over
        and resumed. A directory made here and left empty (a run that
        stopped on bad input) is removed again. In a run of several
        processes, process 0 owns it; the others only read it.
        """
        if not writes_enabled():
            yield self
            return
        made = not self.path.exists()
        self.create()
        handle = self._lock()
        self._remove_unfinished_writes()
        try:
            yield self
        finally:
            (self / LOCK_FILE).unlink(missing_ok=True)
            handle.close()
            if made and not any(self.path.iterdir()):
                self.path.rmdir()

    def _remove_unfinished_writes(self):
        """Temporary files of a write that a killed owner never finished
        (`atomic.replacing` names them): the complete files they were to
        replace, if any, are still there."""
        for pattern in ("tmp-*", ".*.tmp"):
            for path in self.path.glob(pattern):
                if path.is_file():
                    path.unlink()

    def _lock(self):
        """The open lock file, flocked and holding this process's pid."""
        path = self / LOCK_FILE
        while True:
            handle = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(handle)
                handle.close()
                fail(
                    f"--out {self.path} is in use by another run (process "
                    f"{holder}); wait for it to end, or give another --out"
                )
            # The owner before may have removed the file as we opened it.
            if _same_file(handle, path):
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def __truediv__(self, name):
        return self.path / name

    def load_state(self, fresh, checkpoints=True):
        """The saved state, or a copy of `fresh` when the run starts anew.

        A state is the caller's dict (epochs done, steps, history...) plus
        `checkpoint`: the files of the last checkpoint, or None. Each
        checkpoint keeps a copy of the state that names it, so a
        `state.json` damaged by a crash (or a full disk) falls back to the
        newest complete checkpoint. With `checkpoints=False` the state
        names no checkpoint (a pipeline whose stages resume their own
        work): it holds the keys of `fresh` alone.
        """
        path = self / STATE_FILE
        if not path.exists():
            if self._checkpoint_states():
                return self._fallback_state("missing")
            return {**fresh, "checkpoint": None} if checkpoints else {**fresh}
        try:
            return _read_state(
                path, ["checkpoint"] if checkpoints else fresh.keys()
            )
        except ValueError:
            return self._fallback_state("damaged")

    def save_state(self, state):
        atomic_write_json(self / STATE_FILE, state)

    def _checkpoint_states(self):
        """Copies of the state kept with checkpoints, newest first."""
        copies = self.path.glob(f"*{CHECKPOINT_STATE}")
        return sorted(copies, key=lambda p: p.stat().st_mtime, reverse=True)

    def _fallback_state(self, problem):
        """The newest checkpoint whose state copy and files are whole."""
        path = self / STATE_FILE
        for copy in self._checkpoint_states():
            try:
                state = _read_state(copy)
            except ValueError:
                continue
            files = state["checkpoint"].values()
            if all((self / name).is_file() for name in files):
                print(
                    f"warning: {path} is {problem}; resuming from "
                    f"{copy.name} (its checkpoint is complete)"
                )
                return state
        raise ValueError(
            f"{path} is {problem} (an interrupted write?) and no complete "
            f"checkpoint is left to resume from: delete {self.path} (or "
            "give another --out) to start this run again"
        )

    def save_checkpoint(self, trainer, state, name):
        """Weights and optimizer state as `name`, then the state naming
        them; the previous checkpoint is deleted only after that, so an
        interruption at any point leaves one complete checkpoint. Ctrl-C
        and SIGTERM wait until the checkpoint is whole."""
        with deferred_signals():
            self._save_checkpoint(trainer, state, name)

    def _save_checkpoint(self, trainer, state, name):
        files = {
            "weights": f"{name}.weights.h5",
            "optimizer": f"{name}.optimizer.npz",
            "state": f"{name}{CHECKPOINT_STATE}",
        }
        atomic_save_weights(trainer, self / files["weights"])
        atomic_save_optimizer(trainer.optimizer, self / files["optimizer"])
        # What the strategy trains itself (professor's discriminator and
        # its optimizer), and the random generators' states, if any.
        for kind, variables in [
            ("strategy", strategy_variables(trainer)),
            ("random", random_states(trainer)),
        ]:
            if variables:
                files[kind] = f"{name}.{kind}.npz"
                atomic_save_variables(variables, self / files[kind])
        previous = state.get("checkpoint") or {}
        state["checkpoint"] = files
        atomic_write_json(self / files["state"], state)
        self.save_state(state)
        for file in previous.values():
            if file not in files.values() and writes_enabled():
                (self / file).unlink(missing_ok=True)

    def restore_checkpoint(self, trainer, state):
        """Weights and optimizer state (moments, step count: schedules),
        what the strategy trains itself, and the random generators' states
        (checkpoints written before they were saved resume without them)."""
        files = state["checkpoint"]
        try:
            trainer.load_weights(str(self / files["weights"]))
            load_optimizer(trainer, self / files["optimizer"])
            if "random" in files:
                load_variables(
                    random_states(trainer), self / files["random"], "random"
                )
        except Exception as error:  # h5py, NumPy, zip: each its own error
            names = " ".join(
                str(self / name) for name in [STATE_FILE, *files.values()]
            )
            raise ValueError(
                f"{self.path}: the checkpoint of the last finished epoch "
                f"cannot be read ({type(error).__name__}: {error}); to "
                f"train again from the start delete {names} (or give "
                "another --out)"
            ) from None
        if strategy_variables(trainer):
            if "strategy" not in files:
                raise ValueError(
                    f"{self.path}: the checkpoint has no state of the "
                    "strategy's own (discriminator), which this strategy needs"
                )
            load_variables(
                strategy_variables(trainer),
                self / files["strategy"],
                "strategy",
            )

    def check_settings(self, settings, may_change=None):
        """Refuse to resume a run made with other settings (those in
        `may_change`, by default `RESUMABLE`, may change); record the
        settings in `config.json`."""
        self.refuse_other_settings(settings, may_change)
        self.record_settings(settings)

    def record_settings(self, settings):
        atomic_write_json(self / "config.json", settings)

    def refuse_other_settings(self, settings, may_change=None):
        """Stop (one line) if `--out` holds a run of other settings than
        `settings`; those in `may_change` (by default `RESUMABLE`) may
        differ."""
        may_change = RESUMABLE if may_change is None else set(may_change)
        path = self / "config.json"
        if path.exists():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                raise ValueError(
                    f"{path} is damaged (not JSON): delete it to resume "
                    "with these settings, or give another --out"
                ) from None
            changed = {
                key
                for key in settings
                if key in saved
                and saved[key] != settings[key]
                and key not in may_change
            }
            if changed:
                details = ", ".join(
                    f"{key}: {saved[key]!r} -> {settings[key]!r}"
                    for key in sorted(changed)
                )
                raise ValueError(
                    f"--out {self.path} holds a run with other settings "
                    f"({details}); use another --out or delete it"
                )


# Settings (command-line names) that a resumed run may change: they change
# neither the model nor the data already trained on. More `epochs` or
# `steps` train on (pretraining's decay stretches to the new `steps`);
# gradient checkpointing trades memory for time with the same gradients;
# the others only say where and how often to write, or what to decode at
# the end.
RESUMABLE = {
    "verbose",
    "allow_cpu",
    "epochs",
    "steps",
    "out",
    "progress",
    "beams",
    "eval_batch_size",
    "compilation_cache",
    "log_every",
    "checkpoint_every",
    # How many processes train: the global batch, and so the run, is the
    # same (to float round-off) with 1 or N of them.
    "coordinator",
    "num_processes",
    "process_id",
    "coordinator_timeout",
    "gradient_checkpointing",
}
