"""What a run ran on: backend, versions, devices, precision, code.

Every task script prints this before training and records it in its
results, so that a number can be traced to the device and builds that made
it, and so that a CPU-only build on a GPU machine cannot go unnoticed: when
`nvidia-smi` answers but the backend sees no GPU, `check_gpu_build` refuses
to train (one line, with the install command that fixes it) unless the user
allows the CPU.

Device listing goes through `models/backend.py`, the one module that
imports TensorFlow or JAX.
"""

import platform
import shutil
import subprocess

# --precision: Keras dtype policies. bf16 and fp16 compute in 16 bits with
# float32 weights (the model keeps softmax and loss in float32).
POLICIES = {
    "bf16": "mixed_bfloat16",
    "fp16": "mixed_float16",
    "fp32": "float32",
}
# NVIDIA GPUs compute in bfloat16 from Ampere (compute capability 8.0) on.
BF16_CAPABILITY = (8, 0)
# What installs a GPU build of each backend (README, "On a GPU").
GPU_INSTALL = {
    "jax": 'pip install -e ".[jax-gpu]"',
    # tensorflow-cpu and tensorflow install the same `tensorflow` package:
    # the CPU one goes first.
    "tensorflow": "pip uninstall -y tensorflow-cpu && "
    'pip install -e ".[tensorflow-gpu]"',
}


def describe_environment(precision: str | None = None) -> dict:
    """The facts of this process's environment, as a JSON-ready dict.

    Keys: backend, backend_version, keras_version, python, devices (one
    string per device), accelerator ('gpu' or 'cpu'; 'tpu' on a TPU),
    precision (`precision`, or the default for the devices when None:
    bf16 on GPUs that support it, else fp32) and commit (short hash,
    '+dirty' with local changes).
    """
    import keras

    from models import backend
    from tasks.lib.rundir import git_commit

    devices = backend.local_devices()
    if precision is not None and precision not in POLICIES:
        raise ValueError(
            f"precision {precision!r}: expected one of {sorted(POLICIES)}"
        )
    return {
        "backend": backend.BACKEND,
        "backend_version": backend.backend_version(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "devices": [name for _, name, _ in devices],
        "accelerator": accelerator(devices),
        "precision": precision or default_precision(devices),
        "commit": git_commit(),
    }


def accelerator(devices):
    """'gpu' (or 'tpu') when the backend computes on one, else 'cpu'."""
    platforms = {platform for platform, _, _ in devices}
    for kind in ("gpu", "tpu"):
        if kind in platforms:
            return kind
    return "cpu"


def default_precision(devices):
    """bf16 when every accelerator supports it, fp32 on CPUs (where
    bfloat16 is emulated and slower) and on older GPUs."""
    kind = accelerator(devices)
    if kind == "tpu":
        return "bf16"
    if kind != "gpu":
        return "fp32"
    capabilities = [c for p, _, c in devices if p == "gpu"]
    if all(c is not None and tuple(c) >= BF16_CAPABILITY for c in capabilities):
        return "bf16"
    return "fp32"


def summary_line(environment):
    """One line for the start of a run."""
    return (
        f"backend {environment['backend']} "
        f"{environment['backend_version']} (keras "
        f"{environment['keras_version']}, python {environment['python']}); "
        f"devices: {', '.join(environment['devices'])}; "
        f"precision {environment['precision']}"
    )


def nvidia_gpus():
    """The GPUs `nvidia-smi -L` lists on this machine ([] without one)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listed.returncode != 0:
        return []
    return [line for line in listed.stdout.splitlines() if line.strip()]


def gpu_build_problem(environment, gpus=None):
    """One line saying that the machine has an NVIDIA GPU the backend does
    not see, with the install command that fixes it; None when fine."""
    if environment["accelerator"] != "cpu":
        return None
    gpus = nvidia_gpus() if gpus is None else gpus
    if not gpus:
        return None
    backend = environment["backend"]
    fix = GPU_INSTALL.get(backend, "install a GPU build of " + backend)
    return (
        f"nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0].strip()}) but "
        f"{backend} sees none, so training would run on the CPU; install "
        f"a GPU build: {fix}"
    )


def check_gpu_build(environment, allow_cpu, print_fn=print):
    """Refuse to train on the CPU of a GPU machine unless `allow_cpu`.

    A CPU-only build on a GPU machine would otherwise train silently at
    CPU speed; with `allow_cpu` the one line is printed as a warning.
    """
    problem = gpu_build_problem(environment)
    if problem is None:
        return
    if not allow_cpu:
        raise SystemExit(f"error: {problem} (or pass --allow-cpu)")
    print_fn(f"warning: {problem}")
