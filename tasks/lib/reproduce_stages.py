"""The work of `tasks/reproduce.py`'s stages, and the sizes it runs at.

Each function here is one stage's body (or a piece of one) and returns
what the report shows of it, JSON-ready. `tasks/reproduce.py` owns the
pipeline (which stage runs when, with which arguments) and the calls into
other scripts (the benchmark, pretraining); this module imports no script.

Keras, matplotlib and the scoring libraries are imported where they are
used, not at the top: `tasks/reproduce.py --help` imports this module and
answers without them.
"""

import importlib.util
import json
import pathlib
import shlex
import time
from importlib import metadata

from data import read_pairs
from data import sha256_of
from tasks.lib import published
from tasks.lib.cli import fail
from tasks.lib.environment import describe_environment
from tasks.lib.environment import gpu_build_problem
from tasks.lib.runs import Run
from tasks.lib.runs import run_grid

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FINETUNE_SCRIPT = REPO_ROOT / "tasks" / "csl_title.py"
# The sizes of each stage. "full" is the article's scale on one GPU;
# "smoke" runs every code path at toy size on a CPU.
SIZES = {
    "full": {
        # BERT-base (the defaults of benchmark.py train), batches 16 and 64,
        # every registered strategy.
        "benchmark_train": "train".split(),
        "benchmark_decode": (
            "decode --n 1000 --reference-n 100 --layers 12 --hidden 768 "
            "--heads 12"
        ).split(),
        # A BERT-base shape trained from scratch on the CSL corpus.
        "pretrain": (
            "--layers 12 --hidden 768 --heads 12 --intermediate 3072 "
            "--seq-len 128 --batch-size 64 --lr 1e-4 --checkpoint-every "
            "1000"
        ).split(),
        "calibration_steps": 30,
        "min_steps": 100,
        "max_steps": 1_000_000,
        # csl_title.py's defaults with a checkpoint are the article's.
        "finetune": [],
        "seeds": [0, 1, 2],
        "needs_gpu": True,
    },
    "smoke": {
        "benchmark_train": (
            "train --layers 1 --hidden 32 --heads 2 --intermediate 64 "
            "--vocab 100 --maxlen 32 --batch-sizes 4 --steps 2 --warmup 1 "
            "--strategies baseline"
        ).split(),
        "benchmark_decode": (
            "decode --n 6 --reference-n 3 --layers 1 --hidden 32 --heads "
            "2 --maxlen 6 --max-positions 64 --batch-size 6"
        ).split(),
        "pretrain": (
            "--limit 150 --layers 1 --hidden 32 --heads 2 --intermediate "
            "64 --seq-len 64 --target-len 16 --batch-size 8 --lr 1e-3 "
            "--checkpoint-every 4"
        ).split(),
        "calibration_steps": 6,
        "min_steps": 4,
        "max_steps": 12,
        "finetune": (
            "--limit 60 --maxlen 64 --title-maxlen 8 --epochs 1 "
            "--batch-size 8 --lr 1e-3 --valid-limit 6 --eval-batch-size "
            "16"
        ).split(),
        "seeds": [0],
        "needs_gpu": False,
    },
}
# What a figure can depend on: their installed versions are reported.
PACKAGES = (
    "keras",
    "jax",
    "jaxlib",
    "tensorflow",
    "tensorflow-cpu",
    "torch",
    "transformers",
    "numpy",
    "rouge",
    "nltk",
)


# --- environment --------------------------------------------------------------


def environment(data_files: list[pathlib.Path]) -> dict:
    """Backend, devices, versions, and the input files' checksums."""
    facts = describe_environment()
    facts["gpu_build_problem"] = gpu_build_problem(facts)
    facts["packages"] = package_versions()
    facts["data"] = data_checksums(data_files)
    return facts


def package_versions() -> dict:
    """Installed versions of the packages a figure can depend on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def data_checksums(paths) -> list[dict]:
    """sha256 and line count of each input file."""
    rows = []
    for path in paths:
        with open(path, "rb") as handle:
            lines = sum(1 for _ in handle)
        rows.append(
            {"path": str(path), "sha256": sha256_of(path), "lines": lines}
        )
    return rows


def peer_problem(accelerator: str) -> str | None:
    """Why the PyTorch peer cannot be timed here, or None."""
    missing = [
        name
        for name in ("torch", "transformers")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        return (
            f"not measured: {' and '.join(missing)} not installed "
            "(pip install torch transformers)"
        )
    if accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            return "not measured: this torch build sees no GPU"
    return None


def benchmark_command(argv: list[str]) -> str:
    return shlex.join(["python", "tasks/benchmark.py", *argv])


# --- the model ----------------------------------------------------------------


def check_model_dir(directory) -> dict:
    """A complete checkpoint directory that loads here, checked before
    hours of benchmarks; a Google checkpoint needs TensorFlow."""
    from models.config import find_config_file
    from weights.formats import resolve

    directory = pathlib.Path(directory)
    if not directory.is_dir():
        fail(f"--model-dir {directory}: not a directory")
    try:
        config = find_config_file(directory)
        kind, weights = resolve(directory)
    except FileNotFoundError as error:
        fail(f"--model-dir {directory}: {error}")
    if not (directory / "vocab.txt").is_file():
        fail(f"--model-dir {directory}: no vocab.txt")
    if kind == "tf" and importlib.util.find_spec("tensorflow") is None:
        fail(
            f"--model-dir {directory} holds a Google TensorFlow "
            f"checkpoint ({weights.name}), and TensorFlow is not installed "
            "here. Convert it once on a machine with TensorFlow:\n"
            f"    python -m weights.convert {weights} "
            f"{directory / 'model.safetensors'}\n"
            "then copy model.safetensors into the directory and run again."
        )
    return {"config": config, "weights": weights, "format": kind}


def given_model(model_dir) -> dict:
    """The checkpoint given with --model-dir, by its files' sha256."""
    found = check_model_dir(model_dir)
    files = [found["config"], pathlib.Path(model_dir) / "vocab.txt"]
    weights = found["weights"]
    if found["format"] == "tf":
        files += sorted(weights.parent.glob(weights.name + ".*"))
    else:
        files.append(weights)
    return {
        "source": "given",
        "model_dir": str(model_dir),
        "format": found["format"],
        "config": json.loads(found["config"].read_text("utf-8")),
        "sha256": {str(path): sha256_of(path) for path in files},
    }


FROM_SCRATCH = (
    "model: a small BERT initialised at random and trained on the pairs "
    "alone (no pretraining); the article fine-tunes BERT-wwm as released"
)


def random_model(shape: dict) -> dict:
    """The model stage's result where the runs start from random weights
    of `shape` (layers, hidden, heads, intermediate)."""
    return {
        "source": "random",
        "model_dir": None,
        "config": {
            "num_hidden_layers": shape["layers"],
            "hidden_size": shape["hidden"],
            "num_attention_heads": shape["heads"],
            "intermediate_size": shape["intermediate"],
            "vocab_size": "the simplified --vocab",
        },
        "sha256": {},
    }


# --- fine-tuning --------------------------------------------------------------


def fine_tuning_files(extra: list[str], data: pathlib.Path) -> list:
    """The pair files the runs read: those given after `--`, or `data`."""
    flags = ("--train", "--valid", "--test", "--data")
    given = [
        pathlib.Path(extra[extra.index(f) + 1]) for f in flags if f in extra
    ]
    return given or [data]


def finetune(
    workdir: pathlib.Path,
    strategies: list[str],
    seeds: list[int],
    extra: list[str],
    precision: str,
    allow_cpu: bool = False,
) -> dict:
    """tasks/csl_title.py for each strategy x seed into WORKDIR (finished
    runs skipped), every run with `extra`, under `--precision` (bf16
    computes in bfloat16 and keeps float32 weights)."""
    started = time.perf_counter()
    device = ["--precision", precision] + (["--allow-cpu"] if allow_cpu else [])
    run_dirs = run_grid(
        FINETUNE_SCRIPT, strategies, seeds, workdir, [*extra, *device]
    )
    command = ["python", "tasks/csl_title.py", "--strategy", "STRATEGY"]
    command += ["--seed", "SEED", "--out", "DIR", *extra]
    return {
        "precision": precision,
        "command": shlex.join(command),
        "runs": [summarise_run(Run.load(path)) for path in run_dirs],
        "seconds_this_invocation": round(time.perf_counter() - started),
    }


def summarise_run(run: Run) -> dict:
    """One fine-tuning run as the report shows it."""
    results = run.results
    history = results.get("history") or []
    best = results.get("best_epoch")
    valid = next((e for e in history if e["epoch"] == best), {})
    return {
        "dir": str(run.directory),
        "strategy": run.strategy,
        "seed": run.seed,
        "best_epoch": best,
        "epochs": len(history),
        "valid_bleu": valid.get("bleu"),
        "test": run.test,
        "precision": (results.get("environment") or {}).get("precision"),
        "model": results.get("model"),
    }


# --- the comparison -----------------------------------------------------------


def compare(out: pathlib.Path, run_dirs: list, ours: dict, notes=()) -> dict:
    """tasks/compare.py's report of the runs with the article's CSL rows,
    and how `ours` (see `our_setting`) differs from the article's setting;
    `notes` are further differences."""
    from tasks.lib.comparison.report import FILES
    from tasks.lib.comparison.report import build_report
    from tasks.lib.comparison.tables import legend
    from tasks.lib.comparison.tables import markdown_table

    report = build_report(run_dirs, out, published="csl")
    differences, agreements = published.setting_differences(ours)
    command = ["python", "tasks/compare.py", *map(str, run_dirs)]
    command += ["--published", "csl", "--out", str(out)]
    return {
        "command": shlex.join(command),
        "table": markdown_table(
            report["aggregate"], report["published"]["rows"]
        ),
        "legend": legend(report["aggregate"], "csl"),
        "differences": [*differences, *notes],
        "agreements": agreements,
        "ours": ours,
        "files": list(FILES),
    }


def our_setting(run_dirs: list, strategies: list[str]) -> dict:
    """The fine-tuning setting of our runs in `published.SETTING`'s keys;
    a value that differs between runs is listed with every variant."""
    from models.strategies import get as get_strategy

    runs = [Run.load(path) for path in run_dirs]
    values = {}
    for run in runs:
        config = run.config or {}
        keys = ("maxlen", "batch_size", "lr", "epochs", "title_maxlen")
        found = {key: config.get(key) for key in keys}
        found["model"] = run.results.get("model")
        found["data"] = describe_data(run.results)
        for key, value in found.items():
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    ours = {key: v[0] if len(v) == 1 else v for key, v in values.items()}
    seeds = sorted({run.seed for run in runs})
    ours["runs"] = f"mean ± std over {len(seeds)} seed(s) ({seeds})"
    ours["selection"] = (
        "best epoch by validation BLEU (collapsed titles only if all are)"
    )
    options = {}
    for name in strategies:
        strategy = get_strategy(name)
        options[name] = {
            key: getattr(strategy, key)
            for key in ("sample_rate", "token_rate", "epsilon")
            if hasattr(strategy, key)
        }
    ours["strategy_options"] = options
    return ours


def describe_data(results: dict) -> str:
    """'N train / N valid / N test pairs' as the run used them (the
    counts it recorded after --limit, the split and --valid-limit), and
    where they came from."""
    data = results.get("data", {})
    counts = " / ".join(
        f"{data.get(name, {}).get('pairs', '?')} {name}"
        for name in ("train", "valid", "test")
    )
    if "split" in data:
        source = pathlib.Path(data["train"]["path"]).name
        return f"{counts} pairs of {source}, split by seed"
    return f"{counts} pairs"


def corpus_overlap(corpus: list, pair_files: list) -> str:
    """How much of the fine-tuning data the pretraining text holds (lines
    equal after stripping): a reader must know."""
    documents = set()
    for path in corpus:
        with open(path, encoding="utf-8") as lines:
            documents.update(line.strip() for line in lines)
    pairs = [pair for path in pair_files for pair in read_pairs(path)]
    contents = sum(content.strip() in documents for _, content in pairs)
    titles = sum(title.strip() in documents for title, _ in pairs)
    return (
        f"pretraining: on the CSL corpus here, whose text holds {contents}"
        f" of the {len(pairs)} fine-tuning sources and {titles} of their "
        "titles verbatim; the article fine-tunes BERT-wwm as released"
    )
