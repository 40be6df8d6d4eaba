"""One run as N processes: the launch options, their checks, and what
follows from being process 0 or one of the others.

A run of N processes is configured the way `keras.distribution.initialize()`
reads it, by three variables set on every process:

    KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234   # process 0's host:port
    KERAS_DISTRIBUTION_NUM_PROCESSES=2
    KERAS_DISTRIBUTION_PROCESS_ID=0                  # 0 .. N-1

`--coordinator`, `--num-processes` and `--process-id` set (and override)
them. `check_launch` checks them before Keras starts, so that a wrong id, a
global batch the processes cannot split or a coordinator that never answers
costs one line, not a training run. Process 0 alone writes the run
directory (`atomic.discard_writes` on the others); every process computes
the same steps on its share of each global batch.

Multi-process training runs on JAX only: Keras 3 takes TensorFlow's
`MultiWorkerMirroredStrategy` in its trainer, but this toolkit's
TensorFlow path (a `MirroredStrategy` summing to one device, its data
pipeline) is not built or tested for it, so TensorFlow refuses N > 1.
Nothing here imports a backend.
"""

import functools
import os
import socket
import sys
import time

from tasks.lib import atomic
from tasks.lib.cli import fail
from tasks.lib.cli import one_line

ADDRESS = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
# Seconds a process other than 0 waits for the coordinator to listen:
# JAX's own wait (`jax.distributed.initialize`'s initialization_timeout).
COORDINATOR_TIMEOUT = 300
# The exit status of a process whose peer stopped (`stops_with_peers`).
PEER_STOPPED_STATUS = 4
# What the errors of a collective whose peer went away say (Gloo's TCP
# pairs; JAX's coordination service).
PEER_FAILURES = ("Gloo", "coordination service", "heartbeat")


def add_launch_options(group) -> None:
    """--coordinator, --num-processes, --process-id, --coordinator-timeout."""
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="with --num-processes above 1: the address process 0 listens "
        f"on, the same for every process (default: ${ADDRESS})",
    )
    group.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help="train as one of N processes (JAX), each on its local devices "
        "and its share of every global batch (--batch-size); only process 0 "
        f"writes --out (default: ${PROCESSES}, else 1)",
    )
    group.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        help=f"this process's id, 0 to N-1 (default: ${PROCESS_ID})",
    )
    group.add_argument(
        "--coordinator-timeout",
        type=float,
        default=COORDINATOR_TIMEOUT,
        metavar="SECONDS",
        help="how long a process other than 0 waits for the coordinator",
    )


def check_launch(args, batch_size: int | None = None) -> int:
    """Resolve the launch from the flags and the environment, check it,
    and set the environment that `keras.distribution.initialize()` reads;
    returns the number of processes. Call before Keras is imported.

    A process other than 0 waits here for the coordinator to listen
    (process 0 opens it once its backend started), at most
    --coordinator-timeout seconds, and from then on writes nothing.
    """
    count = _given(args.num_processes, PROCESSES, "--num-processes")
    if count is None or count == 1:
        # One process: a plain run, whatever else the variables say.
        for name in (ADDRESS, PROCESSES, PROCESS_ID):
            os.environ.pop(name, None)
        return 1
    if count < 1:
        fail(f"--num-processes {count}: expected 1 or more")
    process = _given(args.process_id, PROCESS_ID, "--process-id")
    if process is None or not 0 <= process < count:
        fail(
            f"--process-id {process}: expected an id from 0 to {count - 1} "
            f"(one per process of --num-processes {count})"
        )
    if batch_size is not None and batch_size % count:
        fail(
            f"--batch-size {batch_size}: the global batch is split among "
            f"--num-processes {count}; expected a multiple of {count}"
        )
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "jax":
        fail(
            f"--num-processes {count}: training as several processes runs "
            f"on JAX only, not {backend}; set KERAS_BACKEND=jax on every "
            "process (see README, More than one machine)"
        )
    host, port = _address(args.coordinator or os.environ.get(ADDRESS))
    os.environ.update(
        {
            ADDRESS: f"{host}:{port}",
            PROCESSES: str(count),
            PROCESS_ID: str(process),
        }
    )
    if process:
        wait_for_coordinator(host, port, args.coordinator_timeout)
        atomic.discard_writes()
    return count


def _given(value, variable, flag):
    """The flag's value, else the variable's (an integer)."""
    if value is not None:
        return value
    text = os.environ.get(variable)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        fail(f"${variable}={text}: expected an integer ({flag})")


def _address(text) -> tuple[str, int]:
    """(host, port) of HOST:PORT (the first of a comma-separated list)."""
    if not text:
        fail(
            f"--num-processes above 1 needs --coordinator HOST:PORT (or "
            f"${ADDRESS}): where process 0 listens"
        )
    host, _, port = text.split(",")[0].strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--coordinator {text}: expected HOST:PORT, e.g. 10.0.0.1:1234")
    return host, int(port)


def wait_for_coordinator(host: str, port: int, timeout: float) -> None:
    """Return once HOST:PORT accepts a connection; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                fail(
                    f"--coordinator {host}:{port}: nothing answered within "
                    f"{timeout:g}s ({error.strerror or error}); start "
                    "process 0 with the same --coordinator, or check the "
                    "address and the firewall"
                )
        time.sleep(0.5)


def writes() -> bool:
    """Whether this process writes the run directory: process 0 (or the
    only one) does."""
    return atomic.writes_enabled()


def stops_with_peers(function):
    """`function`, but when a collective fails because another process of
    the run went away (killed, crashed, or stopped on an error of its
    own), this process says so in one line and exits at once with
    status 4, rather than wait for JAX's shutdown, which waits for the
    missing process (minutes). Alone, `function` as it is."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as error:
            text = one_line(error)
            count = os.environ.get(PROCESSES, "1")
            if count == "1" or not any(k in text for k in PEER_FAILURES):
                raise
            sys.stdout.flush()
            sys.stderr.write(
                f"{os.path.basename(sys.argv[0])}: error: another of the "
                f"{count} processes of this run stopped ({text[:300]}); "
                "start every process again to resume after the last "
                "checkpoint\n"
            )
            sys.stderr.flush()
            os._exit(PEER_STOPPED_STATUS)

    return run
