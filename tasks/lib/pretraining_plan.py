"""Domain-adaptive pretraining that finishes within a time budget.

`tasks/pretrain.py` trains for a given number of steps, and its learning
rate schedule (warm-up, then decay) is laid out over them, so the steps
must be known before training starts. They are derived from a measured
step time: a short calibration run of the same model, data and precision,
then whole-word MLM for `mlm_share` of the steps and the UniLM objective,
continuing from that model, for the rest. Each run resumes from its own
checkpoints, and the plan is saved, so an interrupted stage keeps its plan.

A run is started by the caller's `train(argv)` (`tasks/pretrain.py`'s
`main`, called by `tasks/reproduce.py`): this library imports no script.
"""

import json
import math
import pathlib
import shutil
import time

from tasks.lib.atomic import atomic_save_figure
from tasks.lib.atomic import atomic_write_json
from tasks.lib.rundir import RunDirectory

PLAN_FILE = "plan.json"


def pretrain(out, base_argv, budget_seconds, size, mlm_share, margin, train):
    """Calibrate, plan, train both phases with `train(argv)` (one run of
    tasks/pretrain.py); returns the stage's result."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN_FILE
    if plan_path.exists():
        plan = json.loads(plan_path.read_text("utf-8"))
    else:
        plan = make_plan(
            out, base_argv, budget_seconds, size, mlm_share, margin, train
        )
        atomic_write_json(plan_path, plan)
    phases = []
    for phase in plan["phases"]:
        started = time.perf_counter()
        train(phase["argv"])
        phases.append(
            {
                **phase,
                "seconds_this_invocation": round(
                    time.perf_counter() - started, 1
                ),
                "log": read_log(pathlib.Path(phase["out"]) / "log.jsonl"),
            }
        )
    model_dir = pathlib.Path(plan["phases"][-1]["out"]) / "model"
    curve = out / "loss.png"
    plot_losses(phases, curve)
    return {
        "source": "pretrained",
        "model_dir": str(model_dir),
        "plan": {key: v for key, v in plan.items() if key != "phases"},
        "phases": [summarise(phase) for phase in phases],
        "loss_curve": str(curve),
        "sha256": model_checksums(model_dir),
        "config": json.loads((model_dir / "config.json").read_text("utf-8")),
    }


def make_plan(out, base_argv, budget_seconds, size, mlm_share, margin, train):
    """Time a short run, then share out the steps the budget allows."""
    steps = size["calibration_steps"]
    log_every = max(1, steps // 3)
    calibration_out = out / "calibration"
    # Always timed afresh: a resumed calibration would time nothing.
    shutil.rmtree(calibration_out, ignore_errors=True)
    argv = base_argv + [
        "--objective",
        "mlm",
        "--whole-word",
        "--steps",
        str(steps),
        "--log-every",
        str(log_every),
        "--out",
        str(calibration_out),
    ]
    started = time.perf_counter()
    train(argv)
    calibration_seconds = time.perf_counter() - started
    step_seconds = measured_step_seconds(calibration_out, steps)
    # What a run costs besides its steps: reading and encoding the corpus,
    # building and compiling the model, exporting it.
    overhead = max(0.0, calibration_seconds - steps * step_seconds)
    left = budget_seconds * (1 - margin) - calibration_seconds - 2 * overhead
    total = math.floor(left / step_seconds) if left > 0 else 0
    clamped = min(max(total, size["min_steps"]), size["max_steps"])
    mlm_steps = max(1, round(clamped * mlm_share))
    unilm_steps = max(1, clamped - mlm_steps)
    mlm_out = out / "mlm"
    unilm_out = out / "unilm"
    mlm_argv = base_argv + [
        "--objective",
        "mlm",
        "--whole-word",
        "--steps",
        str(mlm_steps),
        "--log-every",
        str(log_interval(mlm_steps)),
        "--out",
        str(mlm_out),
    ]
    # The UniLM phase continues from the MLM phase's exported model, whose
    # directory holds its own (simplified) vocab and config.
    unilm_argv = without_flags(base_argv, {"--vocab"}) + [
        "--init",
        str(mlm_out / "model"),
        "--objective",
        "unilm",
        "--steps",
        str(unilm_steps),
        "--log-every",
        str(log_interval(unilm_steps)),
        "--out",
        str(unilm_out),
    ]
    return {
        "budget_seconds": budget_seconds,
        "calibration_steps": steps,
        "calibration_seconds": round(calibration_seconds, 1),
        "step_seconds": step_seconds,
        "overhead_seconds": round(overhead, 1),
        "steps_in_budget": total,
        "steps": clamped,
        "clamped_to": None if clamped == total else clamped,
        "phases": [
            phase("whole-word MLM", mlm_steps, mlm_out, mlm_argv),
            phase("UniLM", unilm_steps, unilm_out, unilm_argv),
        ],
    }


def phase(name, steps, out, argv):
    return {"name": name, "steps": steps, "out": str(out), "argv": argv}


def log_interval(steps):
    """About 100 points on the loss curve."""
    return max(1, steps // 100)


def without_flags(argv, flags):
    """`argv` without each flag in `flags` and its one value."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in flags:
            skip = True
        else:
            kept.append(item)
    return kept


def measured_step_seconds(run_dir, steps):
    """Seconds per step after compiling: the calibration's last log
    interval (tokens/s of that interval, at the run's mean tokens/step)."""
    run_dir = pathlib.Path(run_dir)
    log = read_log(run_dir / "log.jsonl")
    state = RunDirectory(run_dir, create=False).load_state({"tokens": 0})
    tokens_per_step = state["tokens"] / steps
    return tokens_per_step / log[-1]["tokens_per_s"]


def read_log(path):
    lines = pathlib.Path(path).read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def summarise(phase):
    log = phase["log"]
    return {
        "name": phase["name"],
        "steps": phase["steps"],
        "out": phase["out"],
        "command": "python tasks/pretrain.py " + " ".join(phase["argv"]),
        "first_loss": log[0]["loss"] if log else None,
        "last_loss": log[-1]["loss"] if log else None,
        "tokens_per_s": log[-1]["tokens_per_s"] if log else None,
        "seconds_this_invocation": phase["seconds_this_invocation"],
    }


def plot_losses(phases, path):
    """Training loss against step, the phases one after the other."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    offset = 0
    for phase in phases:
        log = phase["log"]
        axis.plot(
            [offset + entry["step"] for entry in log],
            [entry["loss"] for entry in log],
            marker="." if len(log) < 30 else None,
            label=phase["name"],
        )
        offset += phase["steps"]
    axis.set(xlabel="step", ylabel="training loss", title="pretraining")
    axis.grid(alpha=0.3)
    axis.legend()
    atomic_save_figure(figure, path, dpi=100)


def model_checksums(model_dir):
    from data import sha256_of

    return {
        str(path): sha256_of(path)
        for path in sorted(pathlib.Path(model_dir).iterdir())
        if path.is_file()
    }
