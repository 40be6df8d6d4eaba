"""tasks/lib/environment.py: device facts, precision default, GPU probe."""

import os
import stat

import pytest

from tasks.lib import environment

CPU = [("cpu", "cpu:0", None)]
AMPERE = [("gpu", "gpu:0 NVIDIA A100", (8, 0))]
VOLTA = [("gpu", "gpu:0 Tesla V100", (7, 0))]


def test_describe_environment_has_every_fact():
    facts = environment.describe_environment()
    assert set(facts) == {
        "backend",
        "backend_version",
        "keras_version",
        "python",
        "devices",
        "accelerator",
        "precision",
        "commit",
    }
    assert facts["backend"] == os.environ.get("KERAS_BACKEND", "tensorflow")
    assert facts["backend_version"][0].isdigit()
    assert facts["devices"] and all(
        isinstance(d, str) for d in facts["devices"]
    )
    # No GPU build is installed here: the CPU, and fp32 on it.
    assert facts["accelerator"] == "cpu"
    assert facts["precision"] == "fp32"


def test_precision_given_overrides_and_is_checked():
    assert environment.describe_environment("bf16")["precision"] == "bf16"
    with pytest.raises(ValueError, match="fp32"):
        environment.describe_environment("half")


@pytest.mark.parametrize(
    "devices, expected",
    [
        (CPU, "fp32"),
        (AMPERE, "bf16"),
        (AMPERE + AMPERE, "bf16"),
        (VOLTA, "fp32"),
        (AMPERE + VOLTA, "fp32"),
        ([("gpu", "gpu:0", None)], "fp32"),
        ([("tpu", "tpu:0 TPU v4", None)], "bf16"),
    ],
)
def test_precision_default_follows_device(devices, expected):
    assert environment.default_precision(devices) == expected


def _stub_nvidia_smi(directory, monkeypatch, exit_code=0):
    stub = directory / "nvidia-smi"
    stub.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)'\n"
        f"exit {exit_code}\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}/usr/bin:/bin")


def test_stub_nvidia_smi_with_cpu_backend_warns_with_the_fix(
    tmp_path, monkeypatch, capsys
):
    _stub_nvidia_smi(tmp_path, monkeypatch)
    facts = environment.describe_environment()
    problem = environment.gpu_build_problem(facts)
    assert problem is not None and "\n" not in problem
    assert "NVIDIA H100" in problem
    assert environment.GPU_INSTALL[facts["backend"]] in problem
    with pytest.raises(SystemExit, match="--allow-cpu"):
        environment.check_gpu_build(facts, allow_cpu=False)
    environment.check_gpu_build(facts, allow_cpu=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ")


def test_no_nvidia_smi_no_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    facts = environment.describe_environment()
    assert environment.gpu_build_problem(facts) is None
    environment.check_gpu_build(facts, allow_cpu=False)
    assert capsys.readouterr().out == ""


def test_failing_nvidia_smi_no_warning(tmp_path, monkeypatch):
    """A driver that answers with an error (no device) is no GPU."""
    _stub_nvidia_smi(tmp_path, monkeypatch, exit_code=9)
    assert environment.nvidia_gpus() == []


def test_a_backend_that_sees_the_gpu_is_fine():
    facts = {"accelerator": "gpu", "backend": "jax"}
    assert environment.gpu_build_problem(facts, ["GPU 0: X"]) is None
