"""A finished run to use (generate titles with, serve), made once a session."""

import os
import subprocess
import sys

import pytest

from tests.common import ROOT
from tests.common import TINY_RUN_ARGS

# The tiny run, its test titles at beams 1 and 2.
TINY_RUN = ["--beams", "1", "2", *TINY_RUN_ARGS]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run of tasks/csl_title.py (about a minute)."""
    out = tmp_path_factory.mktemp("runs") / "baseline-seed0"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tasks" / "csl_title.py"), "--out", out]
        + TINY_RUN,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_predictions(tiny_run):
    """{beam: [(source, predicted title), ...]} of the run's test set."""
    found = {}
    for beam in (1, 2):
        path = tiny_run / f"predictions-beam{beam}.tsv"
        rows = [
            line.split("\t") for line in path.read_text("utf-8").splitlines()
        ]
        found[beam] = [(source, title) for source, _, title in rows[1:]]
    return found
