"""`--init RUN_DIR`: start a run from another finished run's best weights.

The sequence-level strategies (`scst`, `mrt`, `oracle`) start, as their
papers do, from a model trained with teacher forcing: its decoded titles
are already worth scoring. A run started so records where it started
(`results.json` "init": the starting run's directory, strategy, seed,
best epoch and test scores), and `compare.py` shows the starting run's
scores beside the run's own.

A resumed run loads its own checkpoint over these weights, so `--init`
only decides the weights of the first epoch.
"""

import json
import pathlib

from tasks.lib.cli import fail
from tasks.lib.runs import run_label
from tasks.lib.trained_model import BEST_WEIGHTS
from tasks.lib.trained_model import MODEL_VOCAB


def check_init(run_dir: str | None) -> None:
    """Fail in one line unless `run_dir` holds a finished run's best
    weights and results (None: no --init, nothing to check)."""
    if run_dir is None:
        return
    path = pathlib.Path(run_dir)
    for name in (BEST_WEIGHTS, "results.json"):
        if not (path / name).is_file():
            fail(
                f"--init {run_dir}: no {name} there; expected the directory "
                "of a finished run (tasks/csl_title.py --out)"
            )


def describe_init(run_dir: str) -> dict:
    """What results.json records of the starting run."""
    path = pathlib.Path(run_dir)
    results = json.loads((path / "results.json").read_text(encoding="utf-8"))
    return {
        "run": str(path),
        "strategy": results.get("strategy"),
        "label": run_label(results),
        "seed": results.get("seed"),
        "best_epoch": results.get("best_epoch"),
        "test": results.get("test", {}),
    }


def load_init_weights(model, tokenizer, run_dir: str) -> None:
    """The starting run's best weights into `model`; fails in one line
    when its model or vocabulary differ from this run's."""
    path = pathlib.Path(run_dir)
    vocab = path / MODEL_VOCAB
    if vocab.is_file():
        tokens = vocab.read_text(encoding="utf-8").splitlines()
        ours = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
        if tokens != ours:
            fail(
                f"--init {run_dir}: its vocabulary ({len(tokens)} tokens) "
                f"differs from this run's ({len(ours)}); start from a run "
                "of the same model and data"
            )
    try:
        model.load_weights(str(path / BEST_WEIGHTS))
    except ValueError as error:
        fail(f"--init {run_dir}: its weights do not fit this model ({error})")
