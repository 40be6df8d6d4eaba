"""The only module of the training and decoding path that imports
TensorFlow or JAX. (`weights/formats.py` imports TensorFlow too, only to
read TensorFlow's own checkpoint format.)

Training differs per backend in these places, and only there:

- the train/test step: a `GradientTape` on TensorFlow; on JAX a pure
  function of the variable values, differentiated with `jax.value_and_grad`
  and returning the updated state (keras-io `custom_train_step_in_jax.py`);
- gradients taken *inside* a loss (gradient penalty, FGM), which must stay
  differentiable for double backprop: a nested tape, or a nested `jax.grad`;
  and a part that a strategy trains itself inside the loss (professor
  forcing's discriminator), with its own optimizer;
- a branch taken at run time that updates variables (`cond`): a `tf.cond`,
  or a `jax.lax.cond` of two pure functions of the state.
- feeding `fit` (`fit_input`: a `tf.data` pipeline on TensorFlow) and
  compiling a function (`compile_function`: `tf.function` or `jax.jit`);
- data parallelism's devices (`mirrored_strategy`, `replicas`,
  `process_count`), used by `models/distribution.py`.

Everything else (the loss, the strategies) is written once with
`keras.ops` against `Variable`s: on JAX it runs inside a
`keras.StatelessScope` that maps every variable to its traced value, so the
same code reads the right values and its variable updates (dropout and
sampling seeds) come back out as new state.
"""

import contextlib
import pathlib

import keras

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    import tensorflow as tf
elif BACKEND == "jax":
    import jax


def check_supported():
    """Fail early, at trainer creation, on a backend without a step here."""
    if BACKEND not in ("tensorflow", "jax"):
        raise NotImplementedError(
            f"Seq2SeqTrainer supports the tensorflow and jax backends, "
            f"not {BACKEND!r} (set KERAS_BACKEND)"
        )


def check_checkpointing(strategy):
    """Refuse gradient checkpointing where the backend cannot train the
    strategy with it: `tf.recompute_grad` has no second derivative, which
    a strategy that differentiates a gradient (`gp`) needs. JAX's
    `jax.checkpoint` has one."""
    if BACKEND == "tensorflow" and getattr(strategy, "second_derivative", 0):
        raise ValueError(
            f"gradient checkpointing with the {strategy.name} strategy "
            "needs a second derivative through the recomputed blocks, which "
            "TensorFlow's recompute_grad does not give: train it without "
            "checkpointing, or on JAX (KERAS_BACKEND=jax)"
        )


class TensorFlowSteps:
    """`train_step`/`test_step` for TensorFlow: one tape over the loss."""

    def train_step(self, data):
        token_ids, segment_ids = self.unpack_batch(data)
        with tf.GradientTape() as tape:
            total, figures = self.compute_losses(
                token_ids, segment_ids, training=True
            )
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self.update_metrics(total, figures, _batch_size(token_ids))

    def test_step(self, data):
        token_ids, segment_ids = self.unpack_batch(data)
        total, figures = self.compute_losses(
            token_ids, segment_ids, training=False
        )
        return self.update_metrics(total, figures, _batch_size(token_ids))


def _batch_size(token_ids):
    return keras.ops.shape(token_ids)[0]


def _replicas():
    """Replicas running this step: > 1 only under a `tf.distribute`
    strategy such as MirroredStrategy (`models/distribution.py`)."""
    if BACKEND != "tensorflow":
        return 1
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_sum(value):
    """`value` summed over the replicas of a TensorFlow step.

    Under MirroredStrategy each replica runs the step on its share of the
    batch and the optimizer sums the replicas' gradients. A sum over the
    global batch is the all-reduced sum of the shares; its gradient here
    is that of the replica's own share only, so the summed gradients are
    exactly the global-batch gradient, also through the gradient penalty's
    second derivative. (`all_reduce`'s own gradient all-reduces the
    upstream too: N times the share, and collectives in the backward pass.)
    JAX needs none of this: `jit` sees global, sharded arrays.
    """
    if _replicas() == 1:
        return value
    total = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, value
    )
    return value + tf.stop_gradient(total - value)


def _run_stateless(fn, mapping, collect):
    """fn() with variables mapped to values; new values of `collect`."""
    with keras.StatelessScope(state_mapping=mapping) as scope:
        result = fn()
    values = []
    for variable in collect:
        value = scope.get_current_value(variable)
        values.append(variable.value if value is None else value)
    return result, values


class JaxSteps:
    """`train_step`/`test_step` for JAX: pure functions of the state."""

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metric_values = state
        token_ids, segment_ids = self.unpack_batch(data)
        optimizer_state = list(zip(self.optimizer.variables, optimizer_values))

        def objective(trainable, non_trainable):
            # Optimizer variables are mapped too: loss scaling and
            # step-dependent strategies (schedules) read them.
            mapping = [
                *zip(self.trainable_variables, trainable),
                *zip(self.non_trainable_variables, non_trainable),
                *optimizer_state,
            ]

            def losses():
                total, figures = self.compute_losses(
                    token_ids, segment_ids, training=True
                )
                return self.optimizer.scale_loss(total), total, figures

            (scaled, total, figures), non_trainable = _run_stateless(
                losses, mapping, self.non_trainable_variables
            )
            return scaled, (total, figures, non_trainable)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (_, (total, figures, non_trainable)), grads = grad_fn(
            trainable, non_trainable
        )
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
        logs, metric_values = self._stateless_metrics(
            metric_values, total, figures, _batch_size(token_ids)
        )
        return logs, (trainable, non_trainable, optimizer_values, metric_values)

    def test_step(self, state, data):
        trainable, non_trainable, metric_values = state
        token_ids, segment_ids = self.unpack_batch(data)
        mapping = [
            *zip(self.trainable_variables, trainable),
            *zip(self.non_trainable_variables, non_trainable),
        ]
        (total, figures), non_trainable = _run_stateless(
            lambda: self.compute_losses(token_ids, segment_ids, training=False),
            mapping,
            self.non_trainable_variables,
        )
        logs, metric_values = self._stateless_metrics(
            metric_values, total, figures, _batch_size(token_ids)
        )
        return logs, (trainable, non_trainable, metric_values)

    def _stateless_metrics(self, metric_values, total, figures, batch_size):
        mapping = list(zip(self.metrics_variables, metric_values))
        return _run_stateless(
            lambda: self.update_metrics(total, figures, batch_size),
            mapping,
            self.metrics_variables,
        )


# On other backends importing still works; creating a trainer raises
# (`check_supported`).
Steps = TensorFlowSteps if BACKEND == "tensorflow" else JaxSteps


def value_and_grad(fn, variable, state_variables):
    """(fn(), d fn()/d variable), the gradient itself differentiable.

    Strategies call this inside their loss (gradient penalty: the loss
    depends on this gradient, so training needs its second derivative).
    `state_variables` are all variables `fn` may read or update; JAX needs
    them to re-run `fn` as a pure function of `variable`.
    """
    if BACKEND == "tensorflow":
        with tf.GradientTape() as tape:
            value = fn()
        # The embedding gradient arrives as IndexedSlices with repeated rows
        # (one per lookup, plus the tied output projection); densifying sums
        # them, so that squares are taken of the true gradient.
        grad = tf.convert_to_tensor(tape.gradient(value, variable))
        # Under MirroredStrategy, the replica's share: sum them.
        return value, replica_sum(grad)
    others = [v for v in state_variables if v is not variable]
    values = [v.value for v in others]
    seeds = [v for v in others if not v.trainable]

    def pure(value):
        mapping = [(variable, value), *zip(others, values)]
        return _run_stateless(fn, mapping, seeds)

    (value, updated), grad = jax.value_and_grad(pure, has_aux=True)(
        variable.value
    )
    _hand_back(seeds, updated)
    return value, grad


def gradients(fn, variables, state_variables):
    """`(value, aux) = fn()` and d value / d v for each v of `variables`.

    For a part that a strategy trains inside the loss with its own
    optimizer: `variables` may be non-trainable for the trainer (they are
    watched explicitly), the gradients are not differentiable again, and
    under a `tf.distribute` strategy each replica returns its own share,
    which the optimizer sums as it does the train step's gradients (unlike
    `value_and_grad`, whose gradient is itself part of a loss).
    """
    if BACKEND == "tensorflow":
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for variable in variables:
                tape.watch(variable.value)
            value, aux = fn()
        grads = tape.gradient(value, [v.value for v in variables])
        # None (not connected) becomes zeros, as jax.grad gives.
        grads = [
            tf.zeros_like(v.value) if g is None else tf.convert_to_tensor(g)
            for v, g in zip(variables, grads)
        ]
        return value, aux, grads
    ids = {id(v) for v in variables}
    others = [v for v in state_variables if id(v) not in ids]
    values = [v.value for v in others]
    seeds = [v for v in others if not v.trainable]

    def pure(own):
        mapping = [*zip(variables, own), *zip(others, values)]
        (value, aux), updated = _run_stateless(fn, mapping, seeds)
        return value, (aux, updated)

    (value, (aux, updated)), grads = jax.value_and_grad(pure, has_aux=True)(
        [v.value for v in variables]
    )
    _hand_back(seeds, updated)
    return value, aux, grads


def branches_may_synchronise():
    """Whether `cond`'s branches may sum over replicas or step an
    optimizer: not inside a TensorFlow distribution strategy, whose
    replicas cannot synchronise within a run-time branch."""
    return BACKEND != "tensorflow" or not tf.distribute.has_strategy()


def cond(pred, true_fn, false_fn, state_variables):
    """`true_fn()` if `pred` else `false_fn()`, decided at run time; the
    branches may update variables (dropout seeds, a discriminator's weights
    and its optimizer) and only the branch taken runs.

    TensorFlow's `tf.cond` runs stateful branches as they are. JAX traces
    both branches as pure functions of the state (every variable of
    `state_variables` mapped to its current value) and hands the new values
    of the non-trainable ones back, as the train step does. Gradients flow
    through the branch taken on both.
    """
    if BACKEND == "tensorflow":
        return tf.cond(pred, true_fn, false_fn)
    values = [v.value for v in state_variables]
    stateful = [v for v in state_variables if not v.trainable]

    def pure(fn):
        def branch():
            mapping = list(zip(state_variables, values))
            return _run_stateless(fn, mapping, stateful)

        return branch

    result, updated = jax.lax.cond(pred, pure(true_fn), pure(false_fn))
    _hand_back(stateful, updated)
    return result


def _hand_back(variables, values):
    """Give the caller the state updates made inside a nested scope.

    Inside the trainer's StatelessScope an `assign` is recorded as new
    state, so dropout and sampling seeds advance exactly as on TensorFlow.
    """
    for variable, value in zip(variables, values):
        variable.assign(value)


@contextlib.contextmanager
def overridden(variable, value, state_variables):
    """Within the block, `variable` reads as `value` (FGM's perturbed E).

    Gradients taken through the block flow to `variable` as if `value` were
    its value. TensorFlow assigns and restores (the block must be inside
    the tape); JAX maps the variable in a nested StatelessScope.
    """
    if BACKEND == "tensorflow":
        original = tf.identity(variable.value)
        variable.assign(value)
        try:
            yield
        finally:
            variable.assign(original)
        return
    others = [v for v in state_variables if v is not variable]
    mapping = [(variable, value), *((v, v.value) for v in others)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        yield
    seeds = [v for v in others if not v.trainable]
    _hand_back(seeds, [scope.get_current_value(v) for v in seeds])


def compile_function(fn, variables, jit_compile=True):
    """Compile `fn` once per input shape on the current backend.

    On JAX the variables' values are explicit arguments (keras-hub's
    `make_generate_function`), so weights changed after compiling are used
    without retracing; TensorFlow reads its variables by reference.
    """
    if BACKEND == "tensorflow":
        return tf.function(fn, jit_compile=jit_compile)
    if BACKEND != "jax" or not jit_compile:
        return fn

    def stateless(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    compiled = jax.jit(stateless)
    return lambda *args: compiled([v.value for v in variables], *args)


def fit_input(batches):
    """What to hand `fit` for `batches` (a `Seq2SeqBatches`) here.

    Keras's PyDataset adapter on TensorFlow guesses the output signature
    from the first two batches: when they happen to share a length, every
    later batch of another length fails. On TensorFlow the batches are
    therefore wrapped in a `tf.data` generator whose signature leaves the
    length free. The caller sets the epoch order with `set_epoch`, since
    Keras calls no `on_epoch_end` on a `tf.data` pipeline.
    """
    if BACKEND != "tensorflow":
        return batches
    spec = tf.TensorSpec((None, None), tf.int32)

    def generate():
        for index in range(len(batches)):
            yield batches[index]

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=((spec, spec),)
    )
    # The length, so that the progress bar knows it and `fit` does not
    # read past the end ("Your input ran out of data").
    return dataset.apply(tf.data.experimental.assert_cardinality(len(batches)))


def mirrored_strategy():
    """TensorFlow's MirroredStrategy over all GPUs, else all logical CPUs.

    `MirroredStrategy()` alone takes the GPUs or, without any, CPU 0 only;
    listing the CPUs lets logical CPU devices (tests) act as replicas.
    Sums are taken on one device and copied back: with TensorFlow's
    default, collective ops, the gradient penalty's step aborted ("Shape
    mismatch in the collective instance": two replicas paired different
    all-reduces).
    """
    devices = tf.config.list_logical_devices("GPU")
    devices = devices or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(
        [device.name for device in devices],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )


def replicas_in_scope():
    """Replicas of the TensorFlow distribution strategy in scope (1 when
    none); on other backends 1."""
    if BACKEND != "tensorflow":
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


def process_count():
    """Processes (hosts) of a multi-host JAX job; 1 elsewhere."""
    return jax.process_count() if BACKEND == "jax" else 1


def process_index():
    """This process's index in a multi-host JAX job; 0 elsewhere."""
    return jax.process_index() if BACKEND == "jax" else 0


def use_cpu_collectives():
    """CPU devices of several processes reduce through Gloo (over TCP),
    so that a job of CPU processes runs; JAX 0.10 already defaults to
    it, older versions to none. Before `jax.distributed.initialize`."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def sync_processes(name: str) -> None:
    """Wait until every process of a multi-host JAX job gets here (a
    collective over all devices); at once with one process. A process
    that died makes the collective fail instead of wait."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_devices():
    """The devices this backend computes on, as (platform, name, compute
    capability) triples: platform 'gpu' or 'cpu' (TPUs keep their own
    name), compute capability a (major, minor) tuple for NVIDIA GPUs and
    None elsewhere. Other backends: one CPU.
    """
    if BACKEND == "tensorflow":
        return _tensorflow_devices()
    if BACKEND == "jax":
        return [_jax_device(device) for device in jax.local_devices()]
    return [("cpu", "cpu:0", None)]


def _tensorflow_devices():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return [
            ("cpu", f"cpu:{i}", None)
            for i, _ in enumerate(tf.config.list_logical_devices("CPU"))
        ]
    devices = []
    for i, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        name = f"gpu:{i} {details.get('device_name', '')}".strip()
        devices.append(("gpu", name, details.get("compute_capability")))
    return devices


def _jax_device(device):
    platform = (
        "gpu"
        if device.platform in ("gpu", "cuda", "rocm")
        else (device.platform)
    )
    name = f"{platform}:{device.id}"
    if platform != "cpu":
        name += f" {device.device_kind}"
    capability = getattr(device, "compute_capability", None)
    if isinstance(capability, str):
        capability = tuple(int(part) for part in capability.split("."))
    return platform, name, capability


def backend_version():
    """The version of the backend's own package (TensorFlow, JAX...)."""
    if BACKEND == "tensorflow":
        return tf.__version__
    if BACKEND == "jax":
        return jax.__version__
    import importlib

    return getattr(importlib.import_module(BACKEND), "__version__", "")


def free_device_memory():
    """Bytes free on the accelerator that computes, or None: on a CPU, and
    where the backend does not say (TensorFlow reports use, not size)."""
    if BACKEND != "jax":
        return None
    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)


def enable_compilation_cache(directory):
    """Keep JAX's compiled programs in `directory`, so that a new process
    (the next epoch's run, the next experiment) loads the train and
    decoding steps instead of compiling them again. Returns False on other
    backends, which have no such cache."""
    if BACKEND != "jax":
        return False
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Also programs that compile fast: decoding's steps take about a
    # second each on a CPU, and a few dozen of them add up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def reset_peak_memory():
    """Start TensorFlow's count of peak GPU memory again. JAX's peak cannot
    be reset: `peak_memory_bytes` is then the process's peak so far."""
    if BACKEND == "tensorflow" and tf.config.list_physical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory_bytes():
    """Peak memory of the first accelerator in bytes, or None where it is
    not measured (a CPU): since `reset_peak_memory` on TensorFlow, since
    the process started on JAX."""
    if BACKEND == "jax":
        stats = jax.devices()[0].memory_stats()
        return (stats or {}).get("peak_bytes_in_use")
    if BACKEND == "tensorflow" and tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return None


def reset_peak_host_memory():
    """Start the count of the process's peak resident memory again from
    what it holds now (Linux: `clear_refs` 5 resets VmHWM); elsewhere a
    no-op."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_host_memory_bytes():
    """The process's peak resident memory (host RAM: on a CPU, the
    activations' too) in bytes since `reset_peak_host_memory`, or None
    where the system does not say (not Linux)."""
    try:
        status = pathlib.Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None
