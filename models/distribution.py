"""Data parallelism: the model replicated on every device, the batch split.

A task script wraps model building, compile and fit in one block:

    from models.distribution import data_parallel, global_batch_check

    with data_parallel(args.data_parallel):
        global_batch_check(args.batch_size)
        model = build_transformer_model(...)
        trainer = Seq2SeqTrainer(model, strategy)
        trainer.compile(optimizer=keras.optimizers.Adam(lr))
        trainer.fit(DivisibleBatches(batches), ...)

- JAX: Keras's distribution API, `DataParallel` over all devices. Variables
  are replicated, each batch is sharded along its first axis, and the
  jitted step sees global arrays: the loss is the global-batch loss by
  construction. Several processes (hosts) join through
  `jax.distributed`; see `initialize_multi_host` and `shard_batches`.
- TensorFlow: a `MirroredStrategy` scope over all GPUs (or, without GPUs,
  all logical CPUs). Keras runs the step once per replica and sums the
  replicas' gradients; `backend.replica_sum` makes each replica's loss the
  global one, so one step equals one step on one device with the same
  global batch (`tests/models/test_distribution.py`). Single host only.
  Random draws (dropout, `replace`, scheduled sampling) repeat on every
  replica: the seed state is mirrored, so replicas corrupt their shares
  alike. JAX draws once for the global batch, as one device does.

The loss is a mean over the batch's target tokens, not over samples, so a
mean of per-device means would weight tokens unevenly; both backends
compute sum(ce * mask) / sum(mask) over the global batch instead.

The block must hold everything that creates variables (the model, the
trainer, its optimizer) and `fit`: on TensorFlow the trainer keeps the
strategy it was created under; on JAX the distribution is read when
variables are created and when `fit` distributes the data. For several
hosts, enter it before any JAX computation (`keras.utils.set_random_seed`
included), since `jax.distributed.initialize` must come first.
"""

import contextlib
import os

import keras
import numpy as np

from models.backend import mirrored_strategy
from models.backend import process_count
from models.backend import process_index
from models.backend import replicas_in_scope
from models.backend import use_cpu_collectives

# Read by `keras.distribution.initialize()`; any of them set means that this
# process is one of several.
MULTI_HOST_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)

_multi_host_initialized = False


def initialize_multi_host() -> bool:
    """Join a multi-host JAX job when the launcher says there is one.

    Set on every host, e.g. for two hosts (process 0, then 1):

        KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234  # the coordinator
        KERAS_DISTRIBUTION_NUM_PROCESSES=2
        KERAS_DISTRIBUTION_PROCESS_ID=0

    `keras.distribution.initialize()` reads them and calls
    `jax.distributed.initialize()`; on Cloud TPU JAX finds them itself and
    `KERAS_DISTRIBUTION_NUM_PROCESSES` alone is enough. Each process then
    feeds `fit` its own share of each global batch (`shard_batches`) and
    `DataParallel` spans the devices of all hosts; CPU devices reduce
    through Gloo. Returns whether a job was joined; does nothing without
    these variables or off JAX (TensorFlow's multi-worker strategy is not
    wired here).
    """
    global _multi_host_initialized
    if _multi_host_initialized or keras.backend.backend() != "jax":
        return _multi_host_initialized
    if not multi_host_requested():
        return False
    use_cpu_collectives()
    keras.distribution.initialize()
    _multi_host_initialized = True
    return True


def multi_host_requested() -> bool:
    """Whether the launcher made this process one of several."""
    return any(name in os.environ for name in MULTI_HOST_VARIABLES)


@contextlib.contextmanager
def data_parallel(enabled: bool = True):
    """Within the block, models train data-parallel on all devices.

    Yields the backend's object (a `keras.distribution.DataParallel` or a
    `tf.distribute.MirroredStrategy`), or None when not `enabled`, so that
    `--data-parallel` can be a plain flag passed straight through. A
    process launched as one of several is always data-parallel.
    """
    if not (enabled or multi_host_requested()):
        yield None
        return
    backend = keras.backend.backend()
    if backend == "jax":
        initialize_multi_host()
        previous = keras.distribution.distribution()
        # The processes feed their shares already (`shard_batches`).
        distribution = keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(),
            auto_shard_dataset=False,
        )
        keras.distribution.set_distribution(distribution)
        try:
            yield distribution
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        strategy = mirrored_strategy()
        with strategy.scope():
            yield strategy
    else:
        raise NotImplementedError(
            f"data parallelism is implemented for the jax and tensorflow "
            f"backends, not {backend!r}"
        )


def device_count() -> int:
    """Devices that split the batches this process feeds to `fit`.

    1 outside `data_parallel`. On a multi-host JAX job, this host's share
    of the devices: each host feeds its own part of the global batch.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = keras.distribution.distribution()
        if distribution is None:
            return 1
        return distribution.device_mesh.devices.size // process_count()
    return replicas_in_scope()


def global_device_count() -> int:
    """Devices that split a global batch: those of every process."""
    return device_count() * process_count()


def global_batch_check(batch_size: int) -> int:
    """The per-device batch size; fails unless devices divide `batch_size`.

    On JAX an indivisible batch cannot be sharded at all; on TensorFlow the
    replicas would get unequal shares. Call it inside `data_parallel` with
    the global batch size (the batches of `shard_batches`). Only full
    batches are checked: `shard_batches` pads a smaller last one.
    """
    devices = global_device_count()
    if batch_size < 1 or batch_size % devices:
        where = f"{devices} devices"
        if process_count() > 1:
            where += f" of {process_count()} processes"
        raise ValueError(
            f"batch size {batch_size} is not a multiple of the "
            f"{where} training data-parallel; use a multiple "
            f"of {devices} (e.g. {max(1, batch_size // devices) * devices})"
        )
    return batch_size // devices


def shard_batches(batches):
    """What this process feeds `fit` of the global `batches`.

    Every process reads the same batches in the same order (the same data
    and seed); each global batch is padded to a multiple of all devices
    (`DivisibleBatches`), then each process takes its consecutive share
    of the rows (`ProcessShare`), which JAX places on its devices of the
    global mesh: process p's rows are rows p*n/P to (p+1)*n/P of the
    global batch, so the step sees the global batch of one process.
    """
    batches = DivisibleBatches(batches, global_device_count())
    if process_count() == 1:
        return batches
    return ProcessShare(batches, process_index(), process_count())


def process_share(batch):
    """This process's rows of one global `batch` (arrays, or nested
    tuples of them), as `ProcessShare` takes them; alone, `batch`."""
    if process_count() == 1:
        return batch
    index, count = process_index(), process_count()
    return keras.tree.map_structure(
        lambda array: rows_of(array, index, count), batch
    )


def rows_of(array, index: int, count: int) -> np.ndarray:
    """Share `index` of `count` equal shares of the rows of `array`."""
    array = np.asarray(array)
    rows = len(array) // count
    return array[index * rows : (index + 1) * rows]


class DivisibleBatches(keras.utils.PyDataset):
    """`batches` with empty rows added up to a multiple of the devices.

    The last batch of an epoch is usually smaller, and JAX cannot shard
    one that the devices do not divide. An added row is all zeros: padding
    tokens in segment 0, so it has no target tokens and changes neither the
    token-weighted loss nor its gradient. (The epoch's logged mean loss
    weights batches by rows, so that batch counts a little more there.)
    Wraps anything with `len` and indexing, e.g. `Seq2SeqBatches`;
    `set_epoch` and `on_epoch_end` reach the wrapped batches.
    """

    def __init__(self, batches, multiple: int | None = None):
        super().__init__()
        self.batches = batches
        self.multiple = multiple or device_count()
        # Added rows have no targets: the wrapped batches' bound holds.
        self.max_targets = getattr(batches, "max_targets", None)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return keras.tree.map_structure(self._pad, self.batches[index])

    def _pad(self, array):
        array = np.asarray(array)
        missing = -len(array) % self.multiple
        if not missing:
            return array
        rows = np.zeros((missing, *array.shape[1:]), array.dtype)
        return np.concatenate([array, rows])

    def set_epoch(self, epoch):
        self.batches.set_epoch(epoch)

    def on_epoch_end(self):
        self.batches.on_epoch_end()


class ProcessShare(keras.utils.PyDataset):
    """Rows `index * n / count` to `(index + 1) * n / count` of every
    batch of `batches` (n rows, a multiple of `count`): one process's
    share. Token lengths stay those of the global batch, so every process
    feeds arrays of one shape."""

    def __init__(self, batches, index: int, count: int):
        super().__init__()
        self.batches, self.index, self.count = batches, index, count
        self.max_targets = getattr(batches, "max_targets", None)

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return keras.tree.map_structure(
            lambda array: rows_of(array, self.index, self.count),
            self.batches[index],
        )

    def set_epoch(self, epoch):
        self.batches.set_epoch(epoch)

    def on_epoch_end(self):
        self.batches.on_epoch_end()
