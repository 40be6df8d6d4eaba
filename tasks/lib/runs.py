"""What a run is: its directory name (and, as the task layer grows, how a
finished run is loaded and how a grid of runs is started)."""


def run_name(strategy: str, seed: int) -> str:
    """A run's folder name inside a grid: 'replace-seed0'."""
    return f"{strategy}-seed{seed}"


def default_run_dir(task: str, strategy: str, seed: int) -> str:
    """Where a task script writes without --out:
    'runs/csl_title-replace-seed0'."""
    return f"runs/{task}-{run_name(strategy, seed)}"
