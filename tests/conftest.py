"""Shared fixtures: paths to ../shared and tiny model configs."""

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
VOCAB_DIR = SHARED / "vocab" / "bert-base-chinese"
CSL_DEV = SHARED / "data" / "csl_ts" / "dev.tsv"
CLGE_DIR = SHARED / "data" / "clge_samples"
CSL_CORPUS = SHARED / "data" / "csl_corpus"


def require_shared(path):
    """Skip with a clear reason when a file of ../shared is absent."""
    if not pathlib.Path(path).exists():
        pytest.skip(f"{path} not found: ../shared is not beside the repo")
    return pathlib.Path(path)


@pytest.fixture
def vocab_path():
    return require_shared(VOCAB_DIR / "vocab.txt")


@pytest.fixture
def csl_dev_path():
    return require_shared(CSL_DEV)


def pytest_configure(config):
    config.addinivalue_line("markers", "large: slow tests (GPU or big models)")
