"""tasks/diagnose.py: clear errors on folders that are not finished runs,
and end to end on two finished tiny runs of tasks/csl_title.py."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from tasks import diagnose
from tests.common import ROOT
from tests.common import TINY_RUN_ARGS

SCRIPT = ROOT / "tasks" / "diagnose.py"
TINY_RUN = ["--beams", "1", *TINY_RUN_ARGS]
SCORES = {"rouge-l": 0.1, "rouge-1": 0.1, "rouge-2": 0.0, "bleu": 0.01}


def _results(directory, strategy="baseline", seed=0):
    directory.mkdir(parents=True, exist_ok=True)
    run = {"strategy": strategy, "seed": seed, "test": {"1": SCORES}}
    (directory / "results.json").write_text(json.dumps(run))
    return directory


def _error(capsys, argv):
    code = diagnose.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_missing_folder_is_one_clear_line(tmp_path, capsys):
    err = _error(capsys, [str(tmp_path / "nowhere")])
    assert "nowhere: not a directory" in err


def test_a_folder_without_results_is_not_a_finished_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    err = _error(capsys, [str(tmp_path / "run")])
    assert "no results.json" in err


def test_a_run_without_its_settings_is_refused(tmp_path, capsys):
    run = _results(tmp_path / "run")
    err = _error(capsys, [str(run)])
    assert "no config.json" in err


def test_a_run_without_best_weights_is_refused(tmp_path, capsys):
    run = _results(tmp_path / "run")
    (run / "config.json").write_text(json.dumps({"strategy": "baseline"}))
    err = _error(capsys, [str(run)])
    assert "best.weights.h5: missing" in err


def test_broken_settings_name_the_file(tmp_path, capsys):
    run = _results(tmp_path / "run")
    (run / "config.json").write_text("{not json")
    err = _error(capsys, [str(run)])
    assert "config.json: not valid JSON" in err


def test_every_folder_is_checked_before_any_work(tmp_path, capsys):
    good = _results(tmp_path / "good")
    (good / "config.json").write_text("{}")
    (good / "best.weights.h5").write_bytes(b"")
    err = _error(capsys, [str(good), str(tmp_path / "missing")])
    assert "missing: not a directory" in err


def test_options_are_checked_before_any_run_is_read(tmp_path, capsys):
    err = _error(capsys, [str(tmp_path / "nowhere"), "--span", "0"])
    assert err == "diagnose.py: error: --span 0: expected 1 or more\n"


def test_help_describes_every_option():
    parser = diagnose.build_parser()
    for action in parser._actions:
        assert action.help, action.dest
    assert "Usage:" in parser.description


# End to end -------------------------------------------------------------------


def _run(command, **kwargs):
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        **kwargs,
    )


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished tiny runs (baseline and replace, seed 0)."""
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for strategy in ("baseline", "replace"):
        out = root / f"{strategy}-seed0"
        result = _run(
            [
                sys.executable,
                str(ROOT / "tasks" / "csl_title.py"),
                "--strategy",
                strategy,
                "--out",
                str(out),
                *TINY_RUN,
            ]
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(out)
    return runs


@pytest.mark.slow
def test_diagnose_end_to_end_on_two_finished_runs(finished_runs, tmp_path):
    out = tmp_path / "report"
    command = [
        sys.executable,
        str(SCRIPT),
        *map(str, finished_runs),
        "--out",
        str(out),
        "--no-progress",
    ]
    result = _run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("survival", "recovery", "length"):
        for suffix in ("md", "csv", "json", "png"):
            assert (out / f"{name}.{suffix}").stat().st_size > 0
    report = json.loads((out / "diagnostics.json").read_text())
    assert [run["label"] for run in report["runs"]] == ["baseline", "replace"]
    for run in report["runs"]:
        assert run["titles"] == 120  # the synthetic test split
        curves = run["survival"]
        # Greedy decoding and the teacher-forced pass read the same model.
        assert curves["survival"] == curves["teacher_forced"]
        assert run["greedy_equal_to_run"] >= 0.95
        assert len(run["length"]["pairs"]) == 120
    with open(out / "recovery.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["strategy"], row["x"]) for row in rows[:2]] == [
        ("baseline", "1"),
        ("baseline", "2"),
    ]
    assert {row["strategy"] for row in rows} == {"baseline", "replace"}
    markdown = (out / "diagnostics.md").read_text()
    assert "![Survival of greedy titles](survival.png)" in markdown
    assert markdown in result.stdout

    # Cached: a second report reads each run's diagnostics.json.
    for run in finished_runs:
        assert (run / "diagnostics.json").is_file()
    again = _run([*command[:-3], "--out", str(tmp_path / "again")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "again" / "survival.csv").read_text() == (
        out / "survival.csv"
    ).read_text()


@pytest.mark.slow
def test_diagnose_refuses_a_run_whose_test_set_changed(finished_runs, tmp_path):
    run = tmp_path / "changed"
    shutil.copytree(finished_runs[0], run)
    (run / "diagnostics.json").unlink(missing_ok=True)
    path = run / "predictions-beam1.tsv"
    lines = path.read_text(encoding="utf-8").splitlines()
    source, _, prediction = lines[1].split("\t")
    lines[1] = f"{source}\tanother title\t{prediction}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _run(
        [sys.executable, str(SCRIPT), str(run), "--out", str(tmp_path)]
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "predictions-beam1.tsv, line 2: reference differs" in result.stderr


@pytest.mark.slow
def test_compare_adds_the_diagnostics_to_its_report(finished_runs, tmp_path):
    out = tmp_path / "comparison"
    result = _run(
        [
            sys.executable,
            str(ROOT / "tasks" / "compare.py"),
            *map(str, finished_runs),
            "--out",
            str(out),
            "--diagnostics",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| Beam | Strategy |" in table  # the comparison itself
    assert "## Exposure-bias diagnostics" in table
    for name in ("survival", "recovery", "length"):
        assert f"](diagnostics/{name}.png)" in table
        assert (out / "diagnostics" / f"{name}.png").stat().st_size > 0
    assert "| 1 | 120 |" in table  # survival at t=1, over all 120 titles
