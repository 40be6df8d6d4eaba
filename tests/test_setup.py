"""setup.py's extras: GPU extras resolve to GPU builds, CPU extras to CPU
builds. The quick test reads the installed backends' own metadata; the slow
one asks the package registry (`pip install --dry-run --report`)."""

import importlib.metadata
import json
import os
import runpy
import subprocess
import sys
from unittest import mock

import pytest
from packaging.requirements import Requirement

from tests.common import ROOT

GPU_EXTRAS = {"jax-gpu", "jax-cuda13", "tensorflow-gpu"}
CPU_EXTRAS = {"jax", "tensorflow"}


def extras():
    """`extras_require` of setup.py, read without installing anything."""
    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(ROOT / "setup.py"))
    return setup.call_args.kwargs["extras_require"]


def requirements(extra):
    return [Requirement(text) for text in extras()[extra]]


def test_gpu_and_cpu_extras_exist():
    assert GPU_EXTRAS | CPU_EXTRAS <= set(extras())


@pytest.mark.parametrize(
    "extra, name, wanted",
    [
        ("jax-gpu", "jax", {"cuda12"}),
        ("jax-cuda13", "jax", {"cuda13"}),
        ("tensorflow-gpu", "tensorflow", {"and-cuda"}),
        ("jax", "jax", set()),
        ("tensorflow", "tensorflow-cpu", set()),
    ],
)
def test_extra_names_the_ecosystems_build(extra, name, wanted):
    (requirement,) = requirements(extra)
    assert requirement.name == name
    assert requirement.extras == wanted


@pytest.mark.parametrize(
    "distribution, extra, plugin",
    [
        ("jax", "cuda12", "jax-cuda12-plugin"),
        ("jax", "cuda13", "jax-cuda13-plugin"),
        ("tensorflow-cpu", "and-cuda", "nvidia-cudnn-cu12"),
    ],
)
def test_installed_backend_metadata_offers_the_gpu_extra(
    distribution, extra, plugin
):
    """The backend version installed here knows the extra we name, and the
    extra brings the CUDA build (tensorflow and tensorflow-cpu share their
    extras)."""
    try:
        metadata = importlib.metadata.metadata(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed")
    assert extra in metadata.get_all("Provides-Extra")
    brought = {
        Requirement(text).name
        for text in metadata.get_all("Requires-Dist")
        if Requirement(text).marker
        and Requirement(text).marker.evaluate({"extra": extra})
    }
    assert any(name.startswith(plugin) for name in brought), brought


def resolve(names, tmp_path):
    """Names of the distributions pip would install for these extras
    together (one resolution each saves half a minute)."""
    report = tmp_path / "report.json"
    wanted = [text for name in names for text in extras()[name]]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet"]
        + ["--ignore-installed", "--report", str(report)]
        + wanted,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        if "connection" in done.stderr.lower():
            pytest.skip(f"package registry unreachable: {done.stderr[-200:]}")
        raise AssertionError(done.stderr[-2000:])
    install = json.loads(report.read_text())["install"]
    return {
        item["metadata"]["name"].lower().replace("_", "-") for item in install
    }


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="CUDA wheels: Linux only"
)
# What pip resolves does not depend on the Keras backend: one backend's run
# checks it (CI runs the suite once per backend).
@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
    reason="backend-independent; checked under KERAS_BACKEND=tensorflow",
)
@pytest.mark.parametrize(
    "names, present, absent",
    [
        (
            ("jax-gpu", "tensorflow-gpu"),
            {"jax-cuda12-plugin", "tensorflow", "nvidia-cudnn-cu12"},
            {"tensorflow-cpu"},
        ),
        (("jax-cuda13",), {"jax-cuda13-plugin", "nvidia-cudnn-cu13"}, set()),
        (("jax", "tensorflow"), {"jaxlib", "tensorflow-cpu"}, {"tensorflow"}),
    ],
)
def test_extras_resolve_to_the_right_builds(names, present, absent, tmp_path):
    resolved = resolve(names, tmp_path)
    assert present <= resolved, resolved
    assert not absent & resolved, resolved
    if set(names) <= CPU_EXTRAS:
        cuda = [name for name in resolved if "cuda" in name or "nvidia" in name]
        assert not cuda, cuda
