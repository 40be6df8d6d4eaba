"""The measuring and running half of `tasks/reproduce.py --within`: a
short calibration at the planned model size (`calibrate`), and the
fine-tuning grid run against a deadline (`run_within`). The plan itself is
`tasks/lib/budget.py` (pure functions of the timings measured here).

Keras and the models are imported inside the functions that use them:
`tasks/reproduce.py --help` imports this module.
"""

import json
import math
import pathlib
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

from tasks.lib.atomic import atomic_write_json
from tasks.lib.budget import Timings
from tasks.lib.budget import run_seconds
from tasks.lib.budget import runs_to_start
from tasks.lib.runs import check_run_matches
from tasks.lib.runs import run_name

# Sources decoded per timing; a probe run's training steps an epoch and
# validation titles.
DECODE_SOURCES = 16
PROBE_STEPS = 10
PROBE_VALID = 4
# Training steps timed apart, after the compiling ones.
APART_STEPS = 3
# Seconds a stopped run has to save its checkpoint and exit.
STOP_GRACE = 30


def calibrate(shape: dict, strategies, precision: str, probe) -> Timings:
    """Seconds of what a fine-tuning run does, at `shape` (layers, hidden,
    heads, intermediate, vocab, maxlen, title_maxlen, batch, beams,
    sources: abstracts). The first strategy is timed through the task
    script itself (`probe(strategy)`: its command and run directory, a
    short run of two epochs), so tf.data, callbacks, checkpointing and
    validation cost what they cost in the real runs, and a process's
    fixed cost is measured; every strategy's step and compiling are
    timed in this process and scaled by how the first one's compared
    with its real run (`through_pipeline`); a title is decoded at each
    beam (first call and warm) in this process."""
    started = time.perf_counter()
    first = strategies[0]
    command, out = probe(first)
    real = probe_run(command, out)
    config = calibration_config(shape)
    steps, compiles = {}, {}
    for strategy in strategies:
        steps[strategy], compiles[strategy] = time_training(
            shape, config, strategy, precision
        )
    steps, compiles = through_pipeline(
        steps, compiles, first, real["step"], real["compile"]
    )
    decode, decode_compile = time_decoding(shape, config)
    return Timings(
        process=real["process"],
        epoch=real["epoch"],
        compile=compiles,
        step=steps,
        decode=decode,
        decode_compile=decode_compile,
        calibration=round(time.perf_counter() - started, 1),
    )


def through_pipeline(steps, compiles, first, real_step, real_compile):
    """Steps and compile times timed apart, scaled by the ratio of the
    real run's to the apart timing of the `first` strategy (the real
    pipeline adds tf.data and callbacks to a step, and compiles a shape
    per length bucket)."""
    step_ratio = real_step / steps[first]
    compile_ratio = real_compile / max(compiles[first], 1e-9)
    return (
        {strategy: step * step_ratio for strategy, step in steps.items()},
        {key: value * compile_ratio for key, value in compiles.items()},
    )


def time_training(shape, config, strategy, precision):
    """(seconds per steady step, seconds of compiling) of one strategy,
    as `tasks/benchmark.py train` times it, on a random full batch."""
    import argparse

    from tasks.lib.benchmarks.train import random_batch
    from tasks.lib.benchmarks.train import time_ours

    args = argparse.Namespace(
        precision=precision,
        maxlen=shape["maxlen"],
        warmup=2,
        steps=APART_STEPS,
    )
    batch = random_batch(shape["batch"], shape["maxlen"], shape["vocab"])
    started = time.perf_counter()
    step, _ = time_ours(args, config, strategy, "gathered", False, batch)
    total = time.perf_counter() - started
    return step, max(0.0, total - (args.warmup + args.steps) * step)


def probe_pairs(batch: int, train_share: float, available: int) -> int:
    """Pairs a probe run reads: PROBE_STEPS training steps an epoch."""
    return min(available, math.ceil(PROBE_STEPS * batch / train_share))


def probe_flags(pairs: int) -> list[str]:
    """tasks/csl_title.py flags of a probe run (besides model and data)."""
    # The test set: a few pairs (it is timed apart, at every beam).
    return [
        "--limit",
        str(pairs),
        "--epochs",
        "2",
        "--test-fraction",
        "0.02",
    ] + [
        "--valid-limit",
        str(PROBE_VALID),
        "--beams",
        "1",
        "--seed",
        "0",
    ]


def probe_run(command, out) -> dict:
    """`epoch_costs` of one short run of the task script."""
    out = pathlib.Path(out)
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(
            f"the calibration's run failed: {shlex.join(command)}: {tail[0]}"
        )
    return epoch_costs(
        json.loads((out / "results.json").read_text("utf-8")), wall
    )


def epoch_costs(results: dict, wall: float) -> dict:
    """`probe_run`'s figures from a run's results.json and wall time: the
    second epoch's steady step (first step's end to last's) and what its
    epoch took besides its steps (set-up); the first epoch's excess over
    those is compiling; what no epoch or decoding took is the process's
    (start, data, model, saving)."""
    first, second = (entry["train"] for entry in results["history"][:2])
    step = second.get("step_seconds", second["seconds"] / second["steps"])
    epoch = max(0.0, second["seconds"] - second["steps"] * step)
    steady = first["steps"] * step + epoch
    compiling = max(0.0, first["seconds"] - steady)
    decoding = sum(entry["seconds"] for entry in results["history"])
    decoding += sum(beam["seconds"] for beam in results["test"].values())
    rest = wall - first["seconds"] - second["seconds"] - decoding
    return {
        "step": step,
        "epoch": epoch,
        "compile": compiling,
        "process": max(0.0, rest),
    }


def calibration_config(shape):
    from tasks.lib.factory import shape_config

    return shape_config(
        shape["vocab"],
        shape["layers"],
        shape["hidden"],
        shape["heads"],
        shape["intermediate"],
        max(512, shape["maxlen"]),
        dropout=0.1,
    )


def time_decoding(shape, config):
    """({beam: seconds per title, warm}, seconds of the first call beyond
    a warm one), on the first abstracts of the data, batched as the runs
    decode them; beams between the least and the most timed are
    interpolated."""
    from models.decoding import Seq2SeqDecoder
    from tasks.lib.benchmarks.decode import build_random_unilm

    sources = shape["sources"][:DECODE_SOURCES]
    model = build_random_unilm(config, 0, shape["end_id"], 0.1)
    decoder = Seq2SeqDecoder(
        model,
        end_id=shape["end_id"],
        maxlen=shape["title_maxlen"],
        batch_size=len(sources),
    )
    low, high = min(shape["beams"]), max(shape["beams"])
    seconds, first = {}, 0.0
    for beam in sorted({low, high}):
        started = time.perf_counter()
        decoder.beam_search_batch(sources, beam)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        decoder.beam_search_batch(sources, beam)
        warm = time.perf_counter() - started
        seconds[beam] = warm / len(sources)
        first += max(0.0, cold - warm)
    for beam in range(low + 1, high):
        share = (beam - low) / (high - low)
        seconds[beam] = seconds[low] + share * (seconds[high] - seconds[low])
    return seconds, first


# --- the grid against a deadline ----------------------------------------------


def load_or_save(path: pathlib.Path, make) -> dict:
    """The JSON at `path`, or `make()`'s, saved there (a resumed stage
    keeps the plan it started with)."""
    if path.is_file():
        return json.loads(path.read_text("utf-8"))
    value = make()
    atomic_write_json(path, value)
    return value


def run_within(script, fit, workdir, extra, timings, target, deadline, save):
    """The fit's runs in order (finished ones skipped), re-planned before
    each (`budget.runs_to_start`): a run starts only if its predicted
    time, scaled by how the runs finished so far compared with their
    predictions, ends before `deadline` (a `time.monotonic()` value);
    time left over after the planned runs goes into the article's further
    runs (`save(fit)` records them, so a rerun resumes them); a run still
    going at the deadline is stopped. Returns the finished run
    directories and notes on what was added, stopped or not started."""
    workdir = pathlib.Path(workdir)
    notes, ratios = [], []

    def done(run):
        return (workdir / run_name(*run) / "results.json").exists()

    while True:
        finished = [run for run in fit["runs"] if done(run)]
        left = deadline - time.monotonic()
        scale = statistics.mean(ratios) if ratios else 1.0
        start = runs_to_start(fit, finished, left, scale, timings, target)
        if not start:
            notes += not_started(fit, done, left, scale, timings, target)
            break
        strategy, seed = start[0]
        if [strategy, seed] not in [list(run) for run in fit["runs"]]:
            fit["runs"].append([strategy, seed])
            save(fit)
            notes.append(
                f"added: {run_name(strategy, seed)} (time left over, "
                f"{left:.0f} s)"
            )
        out = workdir / run_name(strategy, seed)
        resumed = out.exists()
        started = time.monotonic()
        if not run_until(script, strategy, seed, out, extra, deadline):
            notes.append(
                f"stopped early: {run_name(strategy, seed)} stopped at the "
                "budget's end, unfinished (run the command again to resume "
                "it)"
            )
            break
        if not resumed:
            predicted = run_seconds(
                timings, target, strategy, **setting_of(fit)
            )
            ratios.append((time.monotonic() - started) / predicted)
    finished = [run for run in fit["runs"] if done(run)]
    for strategy, seed in finished:
        check_run_matches(workdir / run_name(strategy, seed), strategy, seed)
    return [workdir / run_name(*run) for run in finished], notes


def setting_of(fit: dict) -> dict:
    return {key: fit[key] for key in ("epochs", "pairs", "valid", "beams")}


def not_started(fit, done, left, scale, timings, target) -> list[str]:
    """The note on the planned runs a re-plan left out, if any."""
    unfinished = [run for run in fit["runs"] if not done(run)]
    if not unfinished:
        return []
    strategy, _ = unfinished[0]
    predicted = scale * run_seconds(
        timings, target, strategy, **setting_of(fit)
    )
    names = ", ".join(run_name(*run) for run in unfinished)
    return [
        f"stopped early: {names} not started (predicted {predicted:.0f} s "
        f"for the next, {max(0, left):.0f} s left in the budget)"
    ]


def run_until(script, strategy, seed, out, extra, deadline) -> bool:
    """One run of the task script, interrupted (SIGINT: it saves its
    checkpoint) at `deadline`; True when it finished."""
    command = [sys.executable, str(script), "--strategy", strategy]
    command += ["--seed", str(seed), "--out", str(out), *extra]
    print("run", shlex.join(command), flush=True)
    process = subprocess.Popen(command)
    try:
        try:
            returncode = process.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # A run stopped while it scored the test set finishes that.
            return (out / "results.json").exists()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finished = (out / "results.json").exists()  # diverged runs too
    if returncode != 0 and not finished:
        raise RuntimeError(f"this run failed: {shlex.join(command)}")
    return finished
