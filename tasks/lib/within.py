"""The measuring and running half of `tasks/reproduce.py --within`: a
short calibration at the planned model size (`calibrate`), and the
fine-tuning grid run against a deadline (`run_within`). The plan itself is
`tasks/lib/budget.py` (pure functions of the timings measured here).

Keras and the models are imported inside the functions that use them:
`tasks/reproduce.py --help` imports this module.
"""

import json
import pathlib
import shlex
import signal
import statistics
import subprocess
import sys
import time

from tasks.lib.atomic import atomic_write_json
from tasks.lib.budget import Timings
from tasks.lib.budget import run_seconds
from tasks.lib.runs import check_run_matches
from tasks.lib.runs import run_name

# Sources decoded per timing, and the training steps timed after the
# compiling ones.
DECODE_SOURCES = 16
CALIBRATION_STEPS = 3
# Seconds a stopped run has to save its checkpoint and exit.
STOP_GRACE = 30


def calibrate(shape: dict, strategies, precision: str) -> Timings:
    """Seconds of what a fine-tuning run does, at `shape` (layers, hidden,
    heads, intermediate, vocab, maxlen, title_maxlen, batch, beams,
    sources: abstracts), in this process: a process start, each
    strategy's first (compiling) and steady training steps, and a title
    decoded at each beam (first call and warm)."""
    started = time.perf_counter()
    process = time_process_start()
    config = calibration_config(shape)
    steps, compiles = {}, {}
    for strategy in strategies:
        steps[strategy], compiles[strategy] = time_training(
            shape, config, strategy, precision
        )
    decode, decode_compile = time_decoding(shape, config)
    return Timings(
        process=process,
        compile=compiles,
        step=steps,
        decode=decode,
        decode_compile=decode_compile,
        calibration=round(time.perf_counter() - started, 1),
    )


def time_process_start() -> float:
    """Seconds to start Python and import what a fine-tuning run does."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import tasks.lib.seq2seq, models.trainer"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


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


def time_training(shape, config, strategy, precision):
    """(seconds per steady step, seconds of compiling) of one strategy,
    as `tasks/benchmark.py train` times it, on a random full batch."""
    import argparse

    from tasks.lib.benchmarks.train import random_batch
    from tasks.lib.benchmarks.train import time_ours

    args = argparse.Namespace(
        precision=precision,
        maxlen=shape["maxlen"],
        warmup=1,
        steps=CALIBRATION_STEPS + 1,
    )
    batch = random_batch(shape["batch"], shape["maxlen"], shape["vocab"])
    started = time.perf_counter()
    step, _ = time_ours(args, config, strategy, "gathered", False, batch)
    total = time.perf_counter() - started
    return step, max(0.0, total - (args.warmup + args.steps) * step)


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


def run_within(script, fit, workdir, extra, timings, target, deadline):
    """The fit's runs in order (finished ones skipped), each started only
    if its predicted time (scaled by how the finished runs compared with
    their predictions) ends before `deadline` (a `time.monotonic()`
    value), and stopped at the deadline if it runs over. Returns the
    finished run directories and what was stopped or not started."""
    setting = {key: fit[key] for key in ("epochs", "pairs", "valid", "beams")}
    finished, notes, ratios = [], [], []
    for position, (strategy, seed) in enumerate(fit["runs"]):
        out = pathlib.Path(workdir) / run_name(strategy, seed)
        if (out / "results.json").exists():
            finished.append(out)
            continue
        predicted = run_seconds(timings, target, strategy, **setting)
        scale = statistics.mean(ratios) if ratios else 1.0
        left = deadline - time.monotonic()
        if predicted * scale > left:
            names = [run_name(*run) for run in fit["runs"][position:]]
            notes.append(
                f"stopped early: {', '.join(names)} not started (predicted "
                f"{predicted * scale:.0f} s for the next, {max(0, left):.0f}"
                " s left in the budget)"
            )
            break
        started = time.monotonic()
        if not run_until(script, strategy, seed, out, extra, deadline):
            notes.append(
                f"stopped early: {run_name(strategy, seed)} stopped at the "
                "budget's end, unfinished (run the command again to resume "
                "it)"
            )
            break
        ratios.append((time.monotonic() - started) / predicted)
        finished.append(out)
    for out, (strategy, seed) in zip(finished, fit["runs"]):
        check_run_matches(out, strategy, seed)
    return finished, notes


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
            return False
    except BaseException:
        process.kill()
        process.wait()
        raise
    finished = (out / "results.json").exists()  # diverged runs too
    if returncode != 0 and not finished:
        raise RuntimeError(f"this run failed: {shlex.join(command)}")
    return finished
