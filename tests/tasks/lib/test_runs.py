"""tasks/lib/runs.py: a run's directory name, `Run.load` on good and
malformed run directories, and the grid runner over a fake task script."""

import json
import pathlib
import sys
import textwrap

import pytest

from tasks.lib.runs import Prediction
from tasks.lib.runs import Run
from tasks.lib.runs import default_run_dir
from tasks.lib.runs import run_grid
from tasks.lib.runs import run_name

SCORES = {"rouge-l": 0.3, "rouge-1": 0.4, "rouge-2": 0.2, "bleu": 0.1}


def write_run(directory, **results):
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run = {"strategy": "gp", "seed": 1, "test": {"01": SCORES}, **results}
    (directory / "results.json").write_text(json.dumps(run))
    return directory


def test_names():
    assert run_name("replace", 0) == "replace-seed0"
    assert default_run_dir("csl_title", "gp", 2) == "runs/csl_title-gp-seed2"


def test_a_finished_run_loads_with_everything_it_holds(tmp_path):
    directory = write_run(
        tmp_path / "run",
        task="lcsts_summary",
        strategy_options_given={"epsilon": 0.5},
        options={"ema": 0.999, "min_length": 1},
    )
    # Settings as an older run saved them: without --maxlen, which then
    # takes its own task's default (lcsts_summary: 192, not csl's 256).
    (directory / "config.json").write_text(json.dumps({"lr": 0.25}))
    lines = ["source\treference\tprediction", "a b\tt 1\tp 1", "c\tt 2"]
    (directory / "predictions-beam2.tsv").write_text("\n".join(lines))
    (directory / "predictions-beam1.tsv").write_text(lines[0] + "\n")
    cache = {"key": {"version": 1}, "result": {"titles": 2}}
    (directory / "diagnostics.json").write_text(json.dumps(cache))

    run = Run.load(directory)
    assert (run.strategy, run.seed, run.task) == ("gp", 1, "lcsts_summary")
    assert run.test == {"1": SCORES}  # "01" and "1" name one beam size
    assert run.label == "gp (epsilon=0.5, ema=0.999)"
    record = run.record()
    assert record["dir"] == str(directory) and record["label"] == run.label
    settings = run.settings()
    assert settings.lr == 0.25 and settings.maxlen == 192
    assert settings.title_maxlen == 32
    assert run.predictions == {
        1: [],
        2: [Prediction("a b", "t 1", "p 1"), Prediction("c", "t 2", None)],
    }
    assert run.diagnostics == cache


def test_a_run_without_settings_or_cache_still_loads(tmp_path):
    run = Run.load(write_run(tmp_path / "run"))
    assert run.config is None and run.diagnostics is None
    assert run.task == "csl_title" and run.predictions == {}
    with pytest.raises(FileNotFoundError, match="run/config.json: no config"):
        run.settings()
    # A broken cache is only recomputed, never an error.
    (run.directory / "diagnostics.json").write_text("{cut")
    assert Run.load(run.directory).diagnostics is None


@pytest.mark.parametrize(
    "results, message",
    [
        (None, r"run: not a finished run \(no results.json\)"),
        ("{\n  cut", r"run/results.json:2: not valid JSON"),
        ("[1, 2]", "run/results.json: expected a JSON object"),
        ({"strategy": "gp", "seed": 0}, "run/results.json: missing key 'test'"),
        ({"test": {}}, "run/results.json: 'test' holds no beam size"),
        ({"test": {"one": SCORES}}, "run/results.json: test key 'one' is not"),
        ({"test": {"1": 0.3}}, r"run/results.json: test\['1'\] is not a dict"),
        (
            {"test": {"1": {"rouge-l": 0.3}}},
            r"run/results.json: test\['1'\] lacks \['rouge-1', 'rouge-2'",
        ),
    ],
)
def test_a_malformed_results_file_is_named(tmp_path, results, message):
    directory = tmp_path / "run"
    directory.mkdir()
    if isinstance(results, dict):
        results = json.dumps({"strategy": "gp", "seed": 0, **results})
    if results is not None:
        (directory / "results.json").write_text(results)
    error = FileNotFoundError if results is None else ValueError
    with pytest.raises(error, match=message):
        Run.load(directory)


def test_a_malformed_settings_file_is_named(tmp_path):
    directory = write_run(tmp_path / "run")
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="run/config.json: not valid JSON"):
        Run.load(directory)


FAKE_TASK = textwrap.dedent(
    """
    import argparse, json, pathlib
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out")
    parser.add_argument("--lr")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True)
    with open(out.parent / "calls.log", "a") as log:
        log.write(f"{args.strategy} {args.seed} {args.lr}\\n")
    scores = {"rouge-l": 0.1, "rouge-1": 0.1, "rouge-2": 0.1, "bleu": 0.1}
    run = {"strategy": args.strategy, "seed": args.seed, "test": {"1": scores}}
    (out / "results.json").write_text(json.dumps(run))
    """
)


def test_the_grid_runs_what_is_missing_and_skips_finished_runs(
    tmp_path, capsys
):
    script = tmp_path / "task.py"
    script.write_text(FAKE_TASK)
    workdir = tmp_path / "runs"
    write_run(workdir / "gp-seed1", strategy="gp", seed=1)
    run_dirs = run_grid(
        script, ["baseline", "gp"], [0, 1], workdir, ["--lr", "0.5"]
    )
    assert run_dirs == [
        workdir / name
        for name in ("baseline-seed0", "baseline-seed1", "gp-seed0", "gp-seed1")
    ]
    calls = (workdir / "calls.log").read_text().splitlines()
    assert calls == ["baseline 0 0.5", "baseline 1 0.5", "gp 0 0.5"]
    out = capsys.readouterr().out
    assert f"skip {workdir / 'gp-seed1'}: results.json exists" in out
    assert f"run {sys.executable} {script} --strategy gp --seed 0" in out
    # Run again: everything is finished, nothing runs.
    run_grid(script, ["baseline", "gp"], [0, 1], workdir, ["--lr", "0.5"])
    assert (workdir / "calls.log").read_text().splitlines() == calls


def test_the_grid_refuses_a_directory_holding_another_run(tmp_path):
    write_run(tmp_path / "gp-seed0", strategy="baseline", seed=0)
    with pytest.raises(ValueError, match="holds 'baseline' seed 0, expected"):
        run_grid(tmp_path / "unused.py", ["gp"], [0], tmp_path, [])
