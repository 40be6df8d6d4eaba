"""--init RUN_DIR end to end: a sequence-level run warm-started from a tiny
baseline run, resumed exactly, and compared beside its starting run."""

import json
import subprocess
import sys

import pytest

from tasks import compare
from tests.common import ROOT
from tests.common import TINY_TASK_ARGS
from tests.common import VOCAB_DIR

SCRIPT = ROOT / "tasks" / "csl_title.py"


def command(csl_dev_path, out, *extra):
    return [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(csl_dev_path),
        "--vocab",
        str(VOCAB_DIR / "vocab.txt"),
        "--out",
        str(out),
        *TINY_TASK_ARGS,
        "--limit",
        "40",
        "--beams",
        "1",
        *extra,
    ]


def run(argv):
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def numbers(run_dir):
    """Every training figure and score of a run, seconds left out."""
    results = json.loads((run_dir / "results.json").read_text("utf-8"))
    history = [
        {k: without_seconds(v) for k, v in entry.items() if "seconds" not in k}
        for entry in results["history"]
    ]
    test = {k: v for k, v in results["test"]["1"].items() if k in SCORES}
    return results, history, test


SCORES = ("rouge-l", "rouge-1", "rouge-2", "bleu")


def without_seconds(value):
    """An epoch's training figures less its wall times."""
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if "seconds" not in k}


@pytest.mark.slow
@pytest.mark.one_backend(
    "tensorflow",
    reason="--init reads files; scst's step and exact resuming are tested "
    "on both backends (test_sequence_level.py, test_csl_title.py)",
)
def test_scst_from_a_baseline_resumes_exactly_and_compares(
    csl_dev_path, tmp_path
):
    baseline = tmp_path / "baseline"
    run(command(csl_dev_path, baseline, "--epochs", "1"))
    scst = [
        "--strategy",
        "scst",
        "--strategy-option",
        "anneal_steps=4",
        "--init",
        str(baseline),
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(command(csl_dev_path, straight, *scst, "--epochs", "2"))
    run(command(csl_dev_path, resumed, *scst, "--epochs", "1"))
    second = run(command(csl_dev_path, resumed, *scst, "--epochs", "2"))
    assert "after epoch 1" in second.stdout

    results, history, test = numbers(straight)
    _, resumed_history, resumed_test = numbers(resumed)
    assert results["init"]["run"] == str(baseline)
    assert results["init"]["strategy"] == "baseline"
    assert results["strategy_options"]["anneal_steps"] == 4
    figures = history[-1]["train"]
    assert {"ce", "reward", "greedy_reward", "mle_share"} <= set(figures)
    assert test == pytest.approx(resumed_test, rel=1e-4, abs=1e-6)
    for ours, theirs in zip(history, resumed_history):
        assert ours["train"] == pytest.approx(theirs["train"], rel=1e-4)

    report = compare.main(
        [str(baseline), str(straight), "--out", str(tmp_path / "report")]
    )
    assert "Warm-started runs (--init)" in report["markdown"]
    assert "scst (anneal_steps=4, init=baseline)" in report["markdown"]


def test_init_without_a_finished_run_is_a_clear_error(csl_dev_path, tmp_path):
    argv = command(csl_dev_path, tmp_path / "o", "--init", str(tmp_path))
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "--init" in result.stderr and "best.weights.h5" in result.stderr
