"""Data parallelism: one step on two devices = one step on one device.

Devices must be declared before the backend starts (`XLA_FLAGS` for JAX,
logical CPUs for TensorFlow), so the comparison runs in a subprocess: this
file run as `python -m tests.models.test_distribution BACKEND`. There the
same initial weights take one SGD step on the same global batch three ways:
on one device (the reference), data-parallel on two devices, and on one
device with the loss a mean of two half-batch means (what a naive
per-device loss computes). The first two must agree and the third must
not, which shows that the batch can tell them apart. SGD, not Adam: Adam's
first step is nearly `lr * sign(grad)` and would hide a scaled gradient.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest

from models.distribution import DivisibleBatches
from models.distribution import ProcessShare
from models.distribution import data_parallel
from models.distribution import device_count
from models.distribution import global_batch_check
from tests.common import ROOT
from tests.common import TINY_DISTRIBUTED

BACKENDS = ("jax", "tensorflow")
TOLERANCE = 1e-6
# gp: a second derivative through the replicas' gradient sum; professor: a
# discriminator with its own optimizer, stepped inside the loss, and (JAX
# only: TensorFlow refuses it) inside a branch taken every other step;
# pgd and vat: gradients of E taken inside the loss and a KL over the
# global batch's target tokens (vat at xi = 0.1: at the default 1e-6 its
# direction comes from a KL of order xi^2, where the replicas' other order
# of float32 sums shows); rdrop: two passes and their KL.
# oracle: titles decoded inside the step, rewards summed over replicas
# (at a constant rate 1 and temperature 0 its choices are deterministic;
# sampled ones come from each replica's own generator on TensorFlow).
STRATEGIES = ("baseline", "gp", "professor", "pgd", "vat", "rdrop", "oracle")
OPTIONS = {
    "vat": dict(xi=0.1),
    "oracle": dict(temperature=0.0, schedule="constant", rate=1.0),
}
JAX_ONLY = {
    "professor every=2 sample": ("professor", dict(every=2, free_run="sample")),
    "oracle sentence": (
        "oracle",
        dict(level="sentence", temperature=0.0, schedule="constant", rate=1.0),
    ),
    "scst": ("scst", {}),
    "mrt": ("mrt", {}),
}
# (source length, target length): unequal targets, so that a mean of
# per-device means weights tokens differently from the global mean.
ROWS = [(3, 1), (2, 7), (4, 2), (1, 5)]


# Tests, in the pytest process ------------------------------------------


def test_outside_data_parallel_one_device():
    with data_parallel(False) as distribution:
        assert distribution is None
        assert device_count() == 1
        assert global_batch_check(3) == 3


def test_divisible_batches_adds_empty_rows():
    class Batches:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return ((np.ones((3, 5), "int32"), np.ones((3, 5), "int32")),)

    ((token_ids, segment_ids),) = DivisibleBatches(Batches(), 4)[0]
    assert token_ids.shape == segment_ids.shape == (4, 5)
    assert not token_ids[3].any() and not segment_ids[3].any()


def test_process_shares_make_the_global_batch():
    """Each of 3 processes takes consecutive rows; together, in process
    order, they are the global batch (what JAX assembles from them)."""

    class Batches:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            token_ids = np.arange(12, dtype="int32").reshape(6, 2)
            return ((token_ids, token_ids + 100),)

    shares = [ProcessShare(Batches(), i, 3)[0] for i in range(3)]
    for share in shares:
        assert share[0][0].shape == (2, 2)
    ((token_ids, segment_ids),) = Batches()[0]
    np.testing.assert_array_equal(
        np.concatenate([s[0][0] for s in shares]), token_ids
    )
    np.testing.assert_array_equal(
        np.concatenate([s[0][1] for s in shares]), segment_ids
    )


@pytest.fixture(scope="module")
def report():
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        pytest.skip(f"data parallelism is implemented for {BACKENDS} only")
    env = dict(os.environ, KERAS_BACKEND=backend)
    if backend == "jax":
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2"
    result = subprocess.run(
        [sys.executable, "-m", "tests.models.test_distribution", backend],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_devices_really_used(report):
    assert report["devices"] == 2
    assert report["replicas_seen"] == 2, report["evidence"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [*STRATEGIES, *JAX_ONLY])
def test_two_devices_equal_one_device(report, strategy):
    if strategy not in report:
        pytest.skip(f"{strategy}: not on {keras.backend.backend()}")
    result = report[strategy]
    assert result["parallel_vs_single"] < TOLERANCE, result
    assert abs(result["loss_parallel"] - result["loss_single"]) < 1e-5
    # Sensitivity: a per-device mean would have moved the weights apart.
    assert result["per_device_mean_vs_single"] > 100 * TOLERANCE, result


@pytest.mark.slow
def test_pretraining_two_devices_equal_one_device(report):
    """The pretraining loss is the fine-tuning one: global over replicas."""
    result = report["pretraining"]
    assert result["parallel_vs_single"] < TOLERANCE, result
    assert abs(result["loss_parallel"] - result["loss_single"]) < 1e-5


@pytest.mark.slow
def test_odd_last_batch_padded_equals_unpadded(report):
    assert report["odd_batch"]["parallel_vs_single"] < TOLERANCE
    assert report["batch_check"] == "ValueError"
    assert report["per_device_batch"] == 2


# Worker, in the subprocess ----------------------------------------------


def _declare_devices(backend):
    """Two CPU devices, before the backend initialises its devices."""
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = tf.config.LogicalDeviceConfiguration()
        tf.config.set_logical_device_configuration(cpu, [logical, logical])
    # JAX: XLA_FLAGS, set by the parent process.


def _batch(rows):
    """[CLS] source [SEP] target [SEP] rows, padded to one length."""
    rng = np.random.default_rng(0)
    length = max(s + t + 3 for s, t in rows)
    token_ids = np.zeros((len(rows), length), "int32")
    segment_ids = np.zeros((len(rows), length), "int32")
    for row, (source, target) in enumerate(rows):
        tokens = [2, *rng.integers(5, 40, source), 3]
        tokens += [*rng.integers(5, 40, target), 3]
        token_ids[row, : len(tokens)] = tokens
        segment_ids[row, source + 2 : len(tokens)] = 1
    return token_ids, segment_ids


def _trainer_classes(backend, evidence):
    """The trainer recording where batches are, and a per-device mean."""
    from models.trainer import Seq2SeqTrainer
    from models.trainer import token_cross_entropy

    class Recording(Seq2SeqTrainer):
        def train_step(self, *args):
            token_ids, _ = self.unpack_batch(args[-1])
            if backend == "jax":
                import jax

                def record(sharding):
                    shape = sharding.shard_shape(token_ids.shape)
                    evidence.append([len(sharding.device_set), shape[0]])

                jax.debug.inspect_array_sharding(token_ids, callback=record)
            else:
                import tensorflow as tf

                replicas = tf.distribute.get_replica_context()
                replicas = replicas.num_replicas_in_sync

                def record(rows):
                    evidence.append([replicas, int(rows)])
                    return rows

                # Run time, not trace time: the rows this replica got.
                tf.py_function(record, [tf.shape(token_ids)[0]], tf.int32)
            return super().train_step(*args)

    class PerDeviceMean(Seq2SeqTrainer):
        """Mean of the two half-batches' token means: the wrong loss."""

        def label_loss(self, logits, labels, mask):
            # Every training cross-entropy comes through here (target_loss
            # too), whether from the full logits or from target_logits.
            half = keras.ops.shape(labels)[0] // 2
            parts = [slice(None, half), slice(half, None)]
            losses = [
                token_cross_entropy(labels[part], logits[part], mask[part])
                for part in parts
            ]
            return (losses[0] + losses[1]) / 2

    return Recording, PerDeviceMean


def _one_step(trainer_class, init_path, strategy, batch):
    """Weights (the model's, then those the strategy trains itself) and
    logged loss after one SGD step from `init_path`."""
    from models import build_transformer_model

    # The same initial state for what the strategy builds (professor's D).
    keras.utils.set_random_seed(0)
    model = build_transformer_model(
        None, application="unilm", **TINY_DISTRIBUTED
    )
    model.load_weights(init_path)
    trainer = trainer_class(model, strategy, seed=0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))
    history = trainer.fit(_as_input([batch]), epochs=1, verbose=0)
    weights = [np.asarray(w) for w in model.get_weights()]
    weights += [np.asarray(v) for v in trainer.strategy_variables()]
    return weights, float(history.history["loss"][-1])


def _pretraining_step(init_path, batch):
    """`_one_step` for `PretrainingTrainer` on the UniLM labels of `batch`
    (the next target token at each position, 0 elsewhere)."""
    from models import build_transformer_model
    from models.pretraining import PretrainingTrainer

    token_ids, segment_ids = batch
    labels = np.zeros_like(token_ids)
    labels[:, :-1] = np.where(segment_ids[:, 1:] == 1, token_ids[:, 1:], 0)
    model = build_transformer_model(
        None, application="unilm", **TINY_DISTRIBUTED
    )
    model.load_weights(init_path)
    trainer = PretrainingTrainer(model, seed=0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.5))

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return (token_ids, segment_ids), labels

    data = DivisibleBatches(Batches(), device_count())
    history = trainer.fit(data, epochs=1, verbose=0)
    weights = [np.asarray(w) for w in model.get_weights()]
    return weights, float(history.history["loss"][-1])


def _as_input(batches):
    """`batches` as `fit` input on the current backend, one per step."""
    from models.backend import fit_input

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, index):
            return (batches[index],)

    return fit_input(DivisibleBatches(Batches(), device_count()))


def _max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def worker(backend):
    _declare_devices(backend)
    from models import build_transformer_model
    from models import strategies

    evidence = []
    recording, per_device_mean = _trainer_classes(backend, evidence)
    batch = _batch(ROWS)
    report = {"devices": len(keras.distribution.list_devices())}
    with tempfile.TemporaryDirectory() as directory:
        init_path = str(pathlib.Path(directory) / "init.weights.h5")
        keras.utils.set_random_seed(0)
        model = build_transformer_model(
            None, application="unilm", **TINY_DISTRIBUTED
        )
        model.save_weights(init_path)
        runs = {name: (name, OPTIONS.get(name, {})) for name in STRATEGIES}
        if backend == "jax":
            runs.update(JAX_ONLY)
        for label, (name, options) in runs.items():

            def strategy():
                return strategies.get(name, **options)

            single, loss_single = _one_step(
                recording, init_path, strategy(), batch
            )
            wrong, _ = _one_step(per_device_mean, init_path, strategy(), batch)
            with data_parallel():
                parallel, loss_parallel = _one_step(
                    recording, init_path, strategy(), batch
                )
            report[label] = {
                "parallel_vs_single": _max_difference(parallel, single),
                "per_device_mean_vs_single": _max_difference(wrong, single),
                "loss_single": loss_single,
                "loss_parallel": loss_parallel,
            }
        single, loss_single = _pretraining_step(init_path, batch)
        with data_parallel():
            parallel, loss_parallel = _pretraining_step(init_path, batch)
        report["pretraining"] = {
            "parallel_vs_single": _max_difference(parallel, single),
            "loss_single": loss_single,
            "loss_parallel": loss_parallel,
        }
        # Three samples: padded to four by DivisibleBatches under two
        # devices, which must not change the step.
        odd = _batch(ROWS[:3])
        evidence_start = len(evidence)
        single, _ = _one_step(recording, init_path, "baseline", odd)
        with data_parallel():
            report["per_device_batch"] = global_batch_check(4)
            try:
                global_batch_check(3)
                report["batch_check"] = "passed"
            except ValueError:
                report["batch_check"] = "ValueError"
            parallel, _ = _one_step(recording, init_path, "baseline", odd)
        report["odd_batch"] = {
            "parallel_vs_single": _max_difference(parallel, single)
        }
        del evidence[evidence_start:]
    report["evidence"] = evidence
    report["replicas_seen"] = _replicas_seen(evidence)
    print(json.dumps(report))


def _replicas_seen(evidence):
    """Most devices one batch was split over: n devices, 1/n of the rows.

    JAX records each step's shard (devices spanned, rows per device); TF
    each replica's rows.
    """
    return max((n for n, rows in evidence if n * rows == len(ROWS)), default=1)


if __name__ == "__main__":
    worker(sys.argv[1])
