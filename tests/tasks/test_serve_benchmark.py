"""tasks/serve_benchmark.py runs end to end (its figures are not checked:
a benchmark, not a timed test)."""

import os
import re
import subprocess
import sys

import pytest

from tests.common import ROOT


@pytest.mark.slow
def test_the_load_test_prints_its_table_and_stops_the_server():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tasks" / "serve_benchmark.py"),
            *("--clients", "4", "--requests", "16", "--seconds", "60"),
            *("--rounds", "2"),
            *("--layers", "1", "--hidden", "32", "--intermediate", "64"),
            *("--maxlen", "64", "--title-maxlen", "8"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "| server, 4 concurrent clients | 32 |" in out
    assert "| in-process, one at a time | 32 |" in out
    assert "titles identical for 32 of 32 requests" in out
    assert re.search(r"median [\d.]+x, rounds [\d.]+x, [\d.]+x;", out)
    assert "server exit status after SIGTERM: 0" in out


def test_argument_errors_are_one_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tasks" / "serve_benchmark.py")]
        + ["--clients", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "serve_benchmark.py: error: --clients 0: expected 1 or more"
    )
