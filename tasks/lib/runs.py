"""What a run is: its directory's name, how a finished one is loaded, and
how a grid of strategies x seeds is run.

A task script (`tasks/csl_title.py`, `tasks/lcsts_summary.py`) writes one
run into one directory: `config.json` (every option it started with),
`results.json` (what it measured), `predictions-beamN.tsv` (its test
titles) and, once diagnosed, `diagnostics.json`. `Run.load` is the one
reader of those files; the comparison, the diagnostics and the
reproduction all read runs through it.
"""

import argparse
import dataclasses
import functools
import json
import pathlib
import subprocess
import sys
from typing import NamedTuple

from tasks.lib.cli import DIVERGED_STATUS
from tasks.lib.cli import fail
from tasks.lib.seq2seq_options import build_parser
from tasks.lib.task_defaults import TASK_DEFAULTS

# The scores every beam of results.json holds, in the article's order.
SCORE_KEYS = ("rouge-l", "rouge-1", "rouge-2", "bleu")
# Run options (results.json "options") and the value that leaves a run as
# it was before they existed: only other values name a variant.
OPTION_DEFAULTS = {
    "label_smoothing": 0.0,
    "ema": None,
    "length_penalty": None,
    "min_length": 1,
}
# The strategies the exposure-bias article compares, in its order.
ARTICLE_STRATEGIES = ("baseline", "replace", "gp")
# Runs that name no task were written by tasks/csl_title.py.
DEFAULT_TASK = "csl_title"
DIAGNOSTICS_FILE = "diagnostics.json"


def run_name(strategy: str, seed: int) -> str:
    """A run's folder name inside a grid: 'replace-seed0'."""
    return f"{strategy}-seed{seed}"


def default_run_dir(task: str, strategy: str, seed: int) -> str:
    """Where a task script writes without --out:
    'runs/csl_title-replace-seed0'."""
    return f"runs/{task}-{run_name(strategy, seed)}"


class Prediction(NamedTuple):
    """One line of a predictions file (None: the line lacks the field)."""

    source: str | None
    reference: str | None
    prediction: str | None


def one_line(text: str) -> str:
    """A text as predictions files hold it: whitespace runs as one space."""
    return " ".join(text.split())


def read_predictions(path: pathlib.Path) -> list[Prediction]:
    """The test titles of `predictions-beamN.tsv`, after its header."""
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()[1:]
    rows = []
    for line in lines:
        fields = line.split("\t")[:3]
        rows.append(Prediction(*fields, *[None] * (3 - len(fields))))
    return rows


@dataclasses.dataclass
class Run:
    """A finished run, as its directory holds it.

    `results` is results.json (beam keys as str(int)); `config` the
    options the run started with (config.json; None where the script wrote
    none); `diagnostics` the cached diagnostics (diagnostics.json; None
    when absent or unreadable, as a cache may be).
    """

    directory: pathlib.Path
    results: dict
    config: dict | None = None
    diagnostics: dict | None = None

    @classmethod
    def load(cls, path) -> "Run":
        """Read a run directory; errors name the file and what is wrong."""
        directory = pathlib.Path(path)
        config = directory / "config.json"
        return cls(
            directory,
            _load_results(directory),
            _load_config(config) if config.is_file() else None,
            _load_cache(directory / DIAGNOSTICS_FILE),
        )

    @property
    def strategy(self) -> str:
        return self.results["strategy"]

    @property
    def seed(self) -> int:
        return self.results["seed"]

    @property
    def test(self) -> dict:
        """{beam (str): scores} of the test set ({} for a diverged run)."""
        return self.results["test"]

    @property
    def diverged(self) -> dict | None:
        """Where a run that diverged stopped ({'epoch', 'step', 'loss',
        'where'}); None for a run that trained to the end."""
        return self.results.get("diverged")

    @property
    def label(self) -> str:
        return run_label(self.results)

    @property
    def task(self) -> str:
        """The task script that wrote the run ('csl_title', ...)."""
        return (
            self.results.get("task")
            or (self.config or {}).get("task")
            or DEFAULT_TASK
        )

    def record(self) -> dict:
        """results.json with the run's directory, label and model family:
        a run as the reports list it."""
        return {
            **self.results,
            "dir": str(self.directory),
            "label": self.label,
            "family": run_family(self.results),
        }

    def settings(self) -> argparse.Namespace:
        """Every option of the run: those it saved in config.json, and its
        task's defaults for options added since it ran."""
        if self.config is None:
            raise FileNotFoundError(
                f"{self.directory / 'config.json'}: no config.json (not a "
                "run directory of tasks/csl_title.py or "
                "tasks/lcsts_summary.py)"
            )
        defaults = TASK_DEFAULTS.get(self.task, TASK_DEFAULTS[DEFAULT_TASK])
        args = build_parser("", defaults).parse_args([])
        vars(args).update(self.config)
        return args

    def predictions_path(self, beam: int) -> pathlib.Path:
        return self.directory / f"predictions-beam{beam}.tsv"

    @functools.cached_property
    def predictions(self) -> dict[int, list[Prediction]]:
        """{beam: test titles} of each predictions file, read once when
        first asked for (reports of scores never need them)."""
        found = {}
        for path in self.directory.glob("predictions-beam*.tsv"):
            beam = path.name[len("predictions-beam") : -len(".tsv")]
            if beam.isdigit():
                found[int(beam)] = read_predictions(path)
        return dict(sorted(found.items()))


# Families a run's model description names ("random init (roformer, ...").
NAMED_FAMILIES = ("roformer", "nezha", "mt5", "t5")


def run_family(results: dict) -> str:
    """The model family of a run: results.json's "family", or for runs
    made before it was recorded, the family its model description names
    (BERT's names none)."""
    if results.get("family"):
        return results["family"]
    model = str(results.get("model", ""))
    for family in NAMED_FAMILIES:
        if f"({family}, " in model:
            return family
    return "bert"


def run_label(results: dict) -> str:
    """Strategy name plus the strategy options given on the command line
    and the run options that differ from their defaults (--ema,
    --label-smoothing, --length-penalty, --min-length): other options are
    another strategy."""
    # Runs record every option (defaults included) and those given; older
    # runs recorded only those given, as "strategy_options".
    options = results.get(
        "strategy_options_given", results.get("strategy_options")
    )
    options = dict(options or {})
    for key, value in (results.get("options") or {}).items():
        if value != OPTION_DEFAULTS.get(key):
            options[key] = value
    if results.get("init"):
        options["init"] = results["init"].get("label")
    if not options:
        return results["strategy"]
    listed = ", ".join(f"{key}={value}" for key, value in options.items())
    return f"{results['strategy']} ({listed})"


def _load_results(directory: pathlib.Path) -> dict:
    """results.json, checked so that errors name the file."""
    path = directory / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory}: not a finished run (no results.json); expected a "
            "directory a task script wrote with --out"
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg})"
        ) from None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if "diverged" in results:
        results.setdefault("test", {})  # no scores: it never finished
    for key in ("strategy", "seed", "test"):
        if key not in results:
            raise ValueError(f"{path}: missing key {key!r}")
    if "diverged" not in results:
        _check_test_scores(path, results["test"])
    # Keys as str(int) so that "01" and "1" name one beam size.
    test = {str(int(beam)): v for beam, v in results["test"].items()}
    return {**results, "test": test}


def _check_test_scores(path: pathlib.Path, test) -> None:
    if not isinstance(test, dict) or not test:
        raise ValueError(f"{path}: 'test' holds no beam size")
    for beam, scores in test.items():
        if not beam.isdigit():
            raise ValueError(f"{path}: test key {beam!r} is not a beam size")
        if not isinstance(scores, dict):
            raise ValueError(f"{path}: test[{beam!r}] is not a dict of scores")
        missing = [key for key in SCORE_KEYS if key not in scores]
        if missing:
            raise ValueError(f"{path}: test[{beam!r}] lacks {missing}")


def _load_config(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _load_cache(path: pathlib.Path) -> dict | None:
    """A cache file, or None: a broken cache is only recomputed."""
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cache if isinstance(cache, dict) else None


# The grid ---------------------------------------------------------------------


def add_grid_options(parser, strategies_help, seeds_help, seeds=None):
    """--strategies and --seeds: the runs of a grid (`seeds`: the default
    seeds, None where the script decides)."""
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(ARTICLE_STRATEGIES),
        help=strategies_help,
    )
    add = parser.add_argument
    add("--seeds", nargs="+", type=int, default=seeds, help=seeds_help)


def run_grid(
    script: pathlib.Path,
    strategies: list[str],
    seeds: list[int],
    workdir: pathlib.Path,
    extra: list[str],
) -> list[pathlib.Path]:
    """Run `script` for each strategy x seed into WORKDIR/STRATEGY-seedN,
    one process per run (each starts with its memory free); returns the
    run directories.

    Every run gets the same `extra` arguments, so data and
    hyper-parameters agree. A run counts as finished once its
    results.json exists: it is skipped, so an interrupted grid resumes
    (and an interrupted run resumes from its own checkpoints).
    """
    run_dirs = []
    for strategy in strategies:
        for seed in seeds:
            out = pathlib.Path(workdir) / run_name(strategy, seed)
            run_dirs.append(out)
            if (out / "results.json").exists():
                print(f"skip {out}: results.json exists", flush=True)
            else:
                _run_one(script, strategy, seed, out, extra)
            check_run_matches(out, strategy, seed)
    return run_dirs


def _run_one(script, strategy, seed, out, extra) -> None:
    """One run of the task script; a failed run stops the grid."""
    command = [sys.executable, str(script), "--strategy", strategy]
    command += ["--seed", str(seed), "--out", str(out), *extra]
    print("run", " ".join(command), flush=True)
    process = subprocess.Popen(command)
    try:
        returncode = process.wait()
    except BaseException:
        # Interrupted here (Ctrl-C): the run must not go on alone.
        process.kill()
        process.wait()
        raise
    if returncode == DIVERGED_STATUS and _diverged(out):
        # A result, recorded in its results.json: the comparison lists it.
        print(f"{out} diverged (its error is above); the grid goes on")
    elif returncode != 0:
        fail(f"this run failed (its error is above): {' '.join(command)}")


def _diverged(out: pathlib.Path) -> bool:
    """Did the run in `out` record that it diverged?"""
    try:
        return "diverged" in Run.load(out).results
    except (OSError, ValueError):
        return False


def check_run_matches(out: pathlib.Path, strategy: str, seed: int) -> None:
    """The script must have written the run it was asked for."""
    run = Run.load(out)
    if (run.strategy, run.seed) != (strategy, seed):
        raise ValueError(
            f"{out}/results.json holds {run.strategy!r} seed {run.seed}"
            f", expected {strategy!r} seed {seed}"
        )
