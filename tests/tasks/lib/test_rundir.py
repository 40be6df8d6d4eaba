"""Run directories: atomic files, checkpoints that survive interruption,
the settings a resumed run may change."""

import json
import re

import keras
import numpy as np
import pytest

from models.trainer import Seq2SeqTrainer
from tasks.lib import atomic
from tasks.lib import rundir
from tasks.lib.rundir import RESUMABLE
from tasks.lib.rundir import RunDirectory
from tests.common import NO_DROPOUT
from tests.common import ROOT
from tests.common import mixed_batch
from tests.common import trainer_model


def test_atomic_writes_leave_only_the_file(tmp_path):
    atomic.atomic_write_text(tmp_path / "a.txt", "one")
    atomic.atomic_write_text(tmp_path / "a.txt", "two")
    atomic.atomic_write_json(tmp_path / "b.json", {"标题": 1})
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "two"
    assert json.loads((tmp_path / "b.json").read_text("utf-8")) == {"标题": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]


def test_fresh_state_is_a_copy(tmp_path):
    fresh = {"step": 0}
    state = RunDirectory(tmp_path).load_state(fresh)
    assert state == {"step": 0, "checkpoint": None}
    state["step"] = 3
    assert fresh == {"step": 0}


def trained(seed=0, steps=1):
    """A trainer after `steps` Adam steps on made-up gradients (so that
    moments and step count are not the initial ones)."""
    trainer = Seq2SeqTrainer(trainer_model(seed), seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    variables = trainer.trainable_variables
    trainer.optimizer.build(variables)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        trainer.optimizer.apply(grads, variables)
    return trainer


def values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A run directory holding the checkpoint of a trained trainer."""
    out = RunDirectory(tmp_path_factory.mktemp("run"))
    trainer = trained()
    state = out.load_state({"epochs_done": 1})
    out.save_checkpoint(trainer, state, "epoch-1")
    return out, trainer, state


def test_checkpoint_restores_weights_and_optimizer(saved):
    out, trainer, state = saved
    other = trained(seed=1, steps=0)
    out.restore_checkpoint(other, out.load_state({}))
    for a, b in zip(values(other.model.weights), values(trainer.model.weights)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        values(other.optimizer.variables), values(trainer.optimizer.variables)
    ):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_restores_the_random_states(tmp_path):
    """Dropout's and the strategy's generators continue where they were."""
    trainer = trained()
    states = rundir.random_states(trainer)
    assert len(states) > 1  # dropout layers and the trainer's own generator
    for i, state in enumerate(states):
        state.assign(np.full(state.shape, 1000 + i, state.dtype))
    run = RunDirectory(tmp_path)
    run.save_checkpoint(trainer, run.load_state({"epochs_done": 1}), "epoch-1")
    other = trained(seed=1, steps=0)
    assert values(rundir.random_states(other))[0][0] != 1000
    run.restore_checkpoint(other, run.load_state({}))
    for a, b in zip(values(rundir.random_states(other)), values(states)):
        np.testing.assert_array_equal(a, b)
    # A checkpoint written before the states were saved still resumes.
    state = run.load_state({})
    del state["checkpoint"]["random"]
    run.restore_checkpoint(trained(seed=1, steps=0), state)


def test_state_names_the_checkpoint_and_the_previous_one_goes(saved, tmp_path):
    out, trainer, state = saved
    saved_state = json.loads((out / "state.json").read_text("utf-8"))
    assert saved_state["checkpoint"] == {
        "weights": "epoch-1.weights.h5",
        "optimizer": "epoch-1.optimizer.npz",
        "random": "epoch-1.random.npz",
        "state": "epoch-1.state.json",
    }
    again = RunDirectory(tmp_path)
    state = again.load_state({})
    again.save_checkpoint(trainer, state, "step-1")
    again.save_checkpoint(trainer, state, "step-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "state.json",
        "step-2.optimizer.npz",
        "step-2.random.npz",
        "step-2.state.json",
        "step-2.weights.h5",
    ]


def test_an_interrupted_save_leaves_the_last_checkpoint_in_charge(
    saved, tmp_path, monkeypatch
):
    out, trainer, _ = saved
    run = RunDirectory(tmp_path)
    state = run.load_state({"epochs_done": 1})
    run.save_checkpoint(trainer, state, "epoch-1")

    def interrupted(optimizer, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "atomic_save_optimizer", interrupted)
    state["epochs_done"] = 2
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(trainer, state, "epoch-2")
    on_disk = run.load_state({})
    assert on_disk["epochs_done"] == 1
    assert on_disk["checkpoint"]["weights"] == "epoch-1.weights.h5"
    assert (tmp_path / "epoch-1.optimizer.npz").exists()
    assert not list(tmp_path.glob("*tmp*"))


def test_optimizer_file_of_another_model_is_refused(saved, tmp_path):
    out, trainer, _ = saved
    files = out.load_state({})["checkpoint"]
    bigger = Seq2SeqTrainer(trainer_model(num_hidden_layers=2), seed=0)
    bigger.compile(optimizer=keras.optimizers.Adam(1e-2))
    with pytest.raises(ValueError, match="optimizer variables"):
        rundir.load_optimizer(bigger, out / files["optimizer"])


def test_settings_may_change_only_where_resumable(tmp_path):
    run = RunDirectory(tmp_path)
    settings = {"lr": 1e-3, "epochs": 2, "steps": 10, "out": "a"}
    run.check_settings(settings)
    run.check_settings({**settings, "epochs": 5, "steps": 20, "out": "b"})
    saved = json.loads((tmp_path / "config.json").read_text("utf-8"))
    assert saved["epochs"] == 5  # the latest settings are recorded
    with pytest.raises(ValueError, match=r"lr: 0\.001 -> 0\.01"):
        run.check_settings({**settings, "lr": 1e-2})
    assert {"epochs", "steps", "out"} <= RESUMABLE and "lr" not in RESUMABLE


def test_git_commit(tmp_path):
    assert rundir.git_commit(tmp_path) == "unknown"
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", rundir.git_commit())


def ema_trainer():
    trainer = Seq2SeqTrainer(trainer_model(**NO_DROPOUT), seed=0)
    optimizer = keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.6)
    trainer.compile(optimizer=optimizer)
    return trainer


def fit_once(trainer):
    trainer.fit(x=mixed_batch(), batch_size=8, shuffle=False, verbose=0)


def averaged(trainer):
    with trainer.averaged_weights():
        return values(trainer.model.weights)


@pytest.mark.slow
def test_weight_averages_resume_exactly(tmp_path):
    """Two steps, checkpoint, a fresh trainer restored from it, one more
    step: the training weights and their averages are those of three
    steps in a row (the averages travel with the optimizer's variables)."""
    straight = ema_trainer()
    for _ in range(3):
        fit_once(straight)
    first = ema_trainer()
    for _ in range(2):
        fit_once(first)
    run = RunDirectory(tmp_path)
    state = run.load_state({})
    run.save_checkpoint(first, state, "step-2")
    resumed = ema_trainer()
    run.restore_checkpoint(resumed, run.load_state({}))
    assert not np.allclose(averaged(resumed)[0], values(resumed.weights)[0])
    fit_once(resumed)
    for a, b in zip(values(resumed.weights), values(straight.weights)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(averaged(resumed), averaged(straight)):
        np.testing.assert_array_equal(a, b)


def _copy_run(saved, tmp_path):
    out, _, _ = saved
    for path in out.path.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return RunDirectory(tmp_path)


def _cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_half_written_state_resumes_from_the_checkpoints_copy(
    saved, tmp_path, capsys
):
    """A crash (or a full disk) that cut state.json short: the run resumes
    from the state kept with the last complete checkpoint."""
    _, trainer, _ = saved
    run = _copy_run(saved, tmp_path)
    _cut_in_half(tmp_path / "state.json")
    state = run.load_state({"epochs_done": 0})
    assert state["epochs_done"] == 1
    assert "state.json is damaged" in capsys.readouterr().out
    other = trained(seed=1, steps=0)
    run.restore_checkpoint(other, state)
    for a, b in zip(values(other.model.weights), values(trainer.model.weights)):
        np.testing.assert_array_equal(a, b)


def test_half_written_state_without_a_checkpoint_says_what_to_delete(
    saved, tmp_path
):
    run = _copy_run(saved, tmp_path)
    _cut_in_half(tmp_path / "state.json")
    (tmp_path / "epoch-1.weights.h5").unlink()
    with pytest.raises(ValueError, match=f"delete {tmp_path}"):
        run.load_state({"epochs_done": 0})


@pytest.mark.parametrize(
    "damaged",
    ["epoch-1.weights.h5", "epoch-1.optimizer.npz", "epoch-1.random.npz"],
)
def test_half_written_checkpoint_says_what_to_delete(saved, tmp_path, damaged):
    run = _copy_run(saved, tmp_path)
    _cut_in_half(tmp_path / damaged)
    state = run.load_state({"epochs_done": 0})
    with pytest.raises(ValueError, match="delete .*state.json") as raised:
        run.restore_checkpoint(trained(seed=1, steps=0), state)
    assert damaged in str(raised.value) and "\n" not in str(raised.value)


def test_nothing_is_written_until_created(tmp_path):
    run = RunDirectory(tmp_path / "run", create=False)
    run.refuse_other_settings({"lr": 1.0})
    assert not (tmp_path / "run").exists()
    run.create()
    assert (tmp_path / "run").is_dir()
