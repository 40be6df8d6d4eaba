"""tasks/lib/stages.py: resumable, skippable stages (no model involved)."""

import json

import pytest

from tasks.lib.stages import Pipeline
from tasks.lib.stages import Stage
from tasks.lib.stages import Unavailable


class Recorder:
    """Stages that log their calls; `fail` names stages that raise."""

    def __init__(self, fail=(), unavailable=()):
        self.calls = []
        self.fail, self.unavailable = set(fail), set(unavailable)

    def stage(self, name, needs=(), inputs=None):
        def run():
            self.calls.append(name)
            if name in self.fail:
                raise RuntimeError(f"{name} broke")
            if name in self.unavailable:
                raise Unavailable("no GPU here")
            return {"value": name.upper()}

        return Stage(name, f"the {name} stage", run, needs, inputs or {})

    def stages(self, inputs=None):
        return [
            self.stage("a"),
            self.stage("b", needs=("a",)),
            self.stage("c", needs=("b",), inputs=inputs),
        ]


def test_a_finished_stage_is_skipped_when_run_again(tmp_path):
    first = Recorder(fail={"b"})
    failed = Pipeline(tmp_path, {"size": 1}).run(first.stages())
    assert failed == ["b"] and first.calls == ["a", "b"]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stages"]["a"]["result"] == {"value": "A"}
    assert state["stages"]["b"]["status"] == "failed"
    assert "RuntimeError: b broke" in state["stages"]["b"]["reason"]
    assert state["stages"]["c"]["status"] == "not run"
    assert "b" in state["stages"]["c"]["reason"]

    second = Recorder()
    assert Pipeline(tmp_path, {"size": 1}).run(second.stages()) == []
    assert second.calls == ["b", "c"]  # a: done before, not run again


def test_changed_inputs_run_a_finished_stage_again(tmp_path):
    Pipeline(tmp_path, {}).run(Recorder().stages({"seeds": [0]}))
    again = Recorder()
    Pipeline(tmp_path, {}).run(again.stages({"seeds": [0, 1]}))
    assert again.calls == ["c"]


def test_unavailable_and_skipped_stages_are_recorded_and_retried(tmp_path):
    calls = []
    reports = []
    recorder = Recorder(unavailable={"a"})
    recorder.calls = calls
    pipeline = Pipeline(tmp_path, {})
    failed = pipeline.run(
        [recorder.stage("a"), recorder.stage("d")],
        skip={"d"},
        after_stage=lambda: reports.append(len(reports)),
    )
    assert failed == [] and calls == ["a"] and reports == [0, 1]
    assert pipeline.record("a")["status"] == "unavailable"
    assert pipeline.record("a")["reason"] == "no GPU here"
    assert pipeline.record("d") == {
        "status": "skipped",
        "title": "the d stage",
        "inputs": {},
        "reason": "--skip d",
    }
    retry = Recorder()
    Pipeline(tmp_path, {}).run([retry.stage("a"), retry.stage("d")])
    assert retry.calls == ["a", "d"]


def test_other_settings_are_refused(tmp_path):
    Pipeline(tmp_path, {"smoke": True, "model_dir": None}).run([])
    with pytest.raises(ValueError, match="smoke: True -> False"):
        Pipeline(tmp_path, {"smoke": False, "model_dir": None})
    # Settings named as changeable may change.
    Pipeline(tmp_path, {"smoke": False, "model_dir": None}, {"smoke"})


def test_a_damaged_state_says_what_to_delete(tmp_path):
    Pipeline(tmp_path, {"smoke": True}).run([])
    state = (tmp_path / "state.json").read_text()
    (tmp_path / "state.json").write_text(state[: len(state) // 2])
    with pytest.raises(ValueError, match=r"state.json is damaged.*delete"):
        Pipeline(tmp_path, {"smoke": True})
