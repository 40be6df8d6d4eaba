"""A pipeline of named stages that resumes where it stopped.

The output folder is a `RunDirectory`: its settings in `OUT/config.json`
(a resumed pipeline with other settings is refused, as a resumed run is),
and the state of every stage in `OUT/state.json`, written atomically after
each one: a stage that finished is skipped when the same command runs
again, unless the inputs it recorded have changed (more strategies, other
seeds); an interrupted stage starts again (stages resume their own work:
finished runs, checkpoints). A stage that cannot run where it is (no GPU,
no peer installed) raises `Unavailable`: that is recorded with its reason
and the pipeline goes on; so does it after a stage that fails, running the
stages that do not need it, and reports the failure at the end.
"""

import dataclasses
import datetime
import time
import traceback
from collections.abc import Callable

from tasks.lib.rundir import RunDirectory

DONE = "done"


class Unavailable(Exception):
    """This stage cannot run here; the message says why."""


@dataclasses.dataclass
class Stage:
    name: str
    title: str
    run: Callable[[], dict]  # returns what the report shows (JSON-ready)
    needs: tuple[str, ...] = ()
    # What the result depends on beyond the pipeline's fixed settings
    # (strategies, seeds): a finished stage with other inputs runs again.
    inputs: dict = dataclasses.field(default_factory=dict)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


class Pipeline:
    """Stages run in order against one output directory."""

    def __init__(self, out, settings, may_change=()):
        """Refuses an `out` holding a pipeline of other `settings` (those
        named in `may_change` may differ)."""
        self.out = RunDirectory(out)
        self.out.check_settings(settings, may_change)
        fresh = {"settings": settings, "stages": {}, "invocations": []}
        self.state = self.out.load_state(fresh, checkpoints=False)
        self.state["settings"] = settings

    def record(self, name):
        return self.state["stages"].get(name, {})

    def save(self):
        self.out.save_state(self.state)

    def run(self, stages, skip=(), after_stage=None):
        """Run `stages` in order; returns the names of failed stages.

        `after_stage()` is called after every stage (the report is
        rewritten, so an interrupted run still has one)."""
        self.save()
        failed = []
        for stage in stages:
            outcome = self._run_one(stage, set(skip))
            if outcome == "failed":
                failed.append(stage.name)
            if after_stage:
                after_stage()
        return failed

    def _run_one(self, stage, skip):
        record = self.record(stage.name)
        if record.get("status") == DONE and record.get("inputs") == (
            stage.inputs
        ):
            print(f"== {stage.name}: done in an earlier run, skipped")
            return DONE
        if stage.name in skip:
            return self._set(stage, "skipped", reason="--skip " + stage.name)
        missing = [
            need
            for need in stage.needs
            if self.record(need).get("status") != DONE
        ]
        if missing:
            return self._set(
                stage,
                "not run",
                reason="needs stage(s) that did not finish: "
                + ", ".join(missing),
            )
        print(f"== {stage.name}: {stage.title}", flush=True)
        self._set(stage, "running", started=now())
        started = time.perf_counter()
        try:
            result = stage.run()
        except Unavailable as error:
            print(f"== {stage.name}: not available here: {error}")
            return self._set(stage, "unavailable", reason=str(error))
        except (Exception, SystemExit) as error:
            # A stage's own error stops that stage, not the stages that do
            # not need it; the command still ends with a failure.
            traceback.print_exc()
            return self._set(
                stage,
                "failed",
                reason=f"{type(error).__name__}: {error}",
                seconds=round(time.perf_counter() - started, 1),
            )
        return self._set(
            stage,
            DONE,
            result=result,
            started=self.record(stage.name).get("started"),
            finished=now(),
            seconds=round(time.perf_counter() - started, 1),
        )

    def _set(self, stage, status, **fields):
        self.state["stages"][stage.name] = {
            "status": status,
            "title": stage.title,
            "inputs": stage.inputs,
            **fields,
        }
        self.save()
        return status
