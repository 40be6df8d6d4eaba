"""Reproduce the exposure-bias article's CSL experiment in one command.

Runs, in order, into one output folder (`--out`), each stage resumable (run
the same command again: finished stages are skipped, an interrupted one
resumes from its own checkpoints) and skippable (`--skip STAGE`):

  environment       backend, devices, versions, precision, commit, data sha256
  benchmark-train   training-step speed against the PyTorch peer
                    (`tasks/benchmark.py train`, BERT-base, batches 16 and 64)
  benchmark-decode  cached decoding against recompute, 1,000 CSL abstracts,
                    beams 1-3 (`tasks/benchmark.py decode`, BERT-base)
  model             --model-dir DIR (a Chinese BERT you downloaded: the path
                    that reproduces the article), or domain-adaptive
                    pretraining on ../shared/data/csl_corpus/ (whole-word MLM,
                    then UniLM) sized to --budget-minutes, with its loss curve
  finetune          tasks/csl_title.py for each --strategies x --seeds, with
                    the article's settings (maxlen 256, batch 16, Adam 1e-5,
                    20 epochs, best epoch by validation BLEU, beams 1-3)
  compare           tasks/compare.py's table, CSV/JSON and plot, with the
                    article's CSL figures as labelled reference rows and the
                    differences in settings

and writes OUT/REPORT.md (every table with its command, device, versions,
data checksums and commit) after each stage. Where a stage cannot run (no
GPU for the BERT-base stages, no PyTorch for the peer) the report says so
and the command goes on. bf16 and compiled (XLA) steps are the defaults on a
GPU. `--smoke` runs the whole pipeline at toy size on a CPU in minutes.

Usage:
    # The article's setting, with a downloaded checkpoint (on a GPU):
    KERAS_BACKEND=jax python tasks/reproduce.py \\
        --model-dir chinese_wwm_L-12_H-768_A-12
    # No checkpoint: pretrain on the CSL corpus for an hour first:
    KERAS_BACKEND=jax python tasks/reproduce.py --budget-minutes 60
    # The pipeline at toy size on a CPU, in a few minutes:
    python tasks/reproduce.py --smoke --out runs/reproduce-smoke

Arguments after `--` go to every tasks/csl_title.py run (e.g. `--
--train train.tsv --valid val.tsv --test test.tsv` for CLGE's split).
A machine without TensorFlow reads Google checkpoints once converted, on a
machine with TensorFlow: `python -m weights.convert
DIR/bert_model.ckpt DIR/model.safetensors`.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import shlex
import sys
import time

from tasks.lib import stages as pipeline_lib
from tasks.lib.rundir import git_commit
from tasks.lib.stages import Stage
from tasks.lib.stages import Unavailable

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
CSL_DATA = SHARED / "data" / "csl_ts" / "dev.tsv"
CORPUS = [
    SHARED / "data" / "csl_corpus" / "abstracts.txt",
    SHARED / "data" / "csl_corpus" / "titles.txt",
]
VOCAB = SHARED / "vocab" / "bert-base-chinese" / "vocab.txt"
STAGE_NAMES = (
    "environment",
    "benchmark-train",
    "benchmark-decode",
    "model",
    "finetune",
    "compare",
)
ARTICLE_STRATEGIES = ["baseline", "replace", "gp"]

# The sizes of each stage. FULL is the article's scale on one GPU; SMOKE
# runs every code path at toy size on a CPU.
FULL = {
    # BERT-base (the defaults of benchmark.py train), batches 16 and 64,
    # every registered strategy.
    "benchmark_train": "train".split(),
    "benchmark_decode": (
        "decode --n 1000 --reference-n 100 --layers 12 --hidden 768 --heads 12"
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
    # csl_title.py's defaults with a checkpoint are the article's settings.
    "finetune": [],
    "seeds": [0, 1, 2],
    "needs_gpu": True,
}
SMOKE = {
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
}
# Pretraining: share of the steps for whole-word MLM (the rest: UniLM), and
# of the budget kept back for what the step time does not cover (saving
# checkpoints, exporting, a slower step than the calibration's).
MLM_SHARE = 0.75
BUDGET_MARGIN = 0.1


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=_Formatter,
    )
    add = parser.add_argument
    add("--out", default="runs/reproduce", help="output folder")
    add(
        "--smoke",
        action="store_true",
        help="the whole pipeline at toy size on a CPU, in minutes",
    )
    add(
        "--model-dir",
        help="a Chinese BERT checkpoint directory (Google or Hugging Face "
        "layout; Google's needs TensorFlow or `python -m weights.convert` "
        "first); none: pretrain one on the CSL corpus",
    )
    add(
        "--budget-minutes",
        type=float,
        default=60.0,
        help="wall time of the pretraining stage (without --model-dir); "
        "its steps are sized from a measured step time",
    )
    add(
        "--strategies",
        nargs="+",
        default=ARTICLE_STRATEGIES,
        help="strategies to fine-tune (any registered one)",
    )
    add(
        "--seeds",
        nargs="+",
        type=int,
        help="fine-tuning seeds (default 0 1 2; with --smoke 0)",
    )
    add(
        "--skip",
        nargs="+",
        default=[],
        choices=STAGE_NAMES,
        metavar="STAGE",
        help=f"stages not to run: {', '.join(STAGE_NAMES)}",
    )
    add(
        "--data",
        type=pathlib.Path,
        default=CSL_DATA,
        help="CSL pairs split 80/10/10 by seed for fine-tuning (give "
        "--train/--valid/--test after -- to use fixed splits instead)",
    )
    add(
        "--corpus",
        nargs="+",
        type=pathlib.Path,
        default=CORPUS,
        help="pretraining text, one document a line",
    )
    add(
        "--vocab",
        type=pathlib.Path,
        default=VOCAB,
        help="vocabulary of the model pretrained on --corpus",
    )
    add(
        "--allow-cpu",
        action="store_true",
        help="run the BERT-base stages without a GPU (slow: days for "
        "fine-tuning)",
    )
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the usage examples' line breaks; show each real default once
    (not None, a flag's False or an empty list, nor where the help text
    already says it)."""

    def _get_help_string(self, action):
        text = action.help
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        if isinstance(default, list):
            default = " ".join(map(str, default))
        return f"{text} (default: {default})".replace("%", "%%")


def parse_args(argv):
    """Arguments, and those after `--` that go to tasks/csl_title.py."""
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.finetune_extra = extra
    size = SMOKE if args.smoke else FULL
    args.seeds = args.seeds if args.seeds is not None else size["seeds"]
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if not set(extra) & {"--train", "--data"} and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    if not args.model_dir:
        for path in [*args.corpus, args.vocab]:
            if not path.is_file():
                parser.error(f"{path}: no such file (needed to pretrain)")
    return args


def check_strategies(names):
    """Every name must be registered now (other strategies may have been
    added since this script was written: the registry is read here)."""
    from models.strategies import STRATEGIES

    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise SystemExit(
            f"error: unknown strategies {unknown}; registered: "
            f"{', '.join(sorted(STRATEGIES))}"
        )


def check_model_dir(directory):
    """A complete checkpoint directory that loads here, checked before
    hours of benchmarks; a Google checkpoint needs TensorFlow."""
    from models.bert import find_config_file
    from weights.formats import resolve

    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise SystemExit(f"error: --model-dir {directory}: not a directory")
    try:
        config = find_config_file(directory)
        kind, weights = resolve(directory)
    except FileNotFoundError as error:
        raise SystemExit(f"error: --model-dir {directory}: {error}") from None
    if not (directory / "vocab.txt").is_file():
        raise SystemExit(f"error: --model-dir {directory}: no vocab.txt")
    if kind == "tf" and importlib.util.find_spec("tensorflow") is None:
        raise SystemExit(
            f"error: --model-dir {directory} holds a Google TensorFlow "
            f"checkpoint ({weights.name}), and TensorFlow is not installed "
            "here. Convert it once on a machine with TensorFlow:\n"
            f"    python -m weights.convert {weights} "
            f"{directory / 'model.safetensors'}\n"
            "then copy model.safetensors into the directory and run again."
        )
    return {"config": config, "weights": weights, "format": kind}


class Reproduction:
    """The stages, over one output folder and one set of arguments."""

    def __init__(self, args, argv):
        self.args = args
        self.argv = argv
        self.size = SMOKE if args.smoke else FULL
        self.out = pathlib.Path(args.out)
        self._facts = None

    # --- set-up --------------------------------------------------------

    def settings(self):
        """What the stages' results depend on: a resumed run must agree."""
        args = self.args
        return {
            "smoke": args.smoke,
            "model_dir": args.model_dir,
            "budget_minutes": None if args.model_dir else args.budget_minutes,
            "data": str(args.data),
            "corpus": [str(path) for path in args.corpus],
            "vocab": str(args.vocab),
            "finetune_extra": args.finetune_extra,
        }

    def stages(self):
        runs = {"strategies": self.args.strategies, "seeds": self.args.seeds}
        return [
            Stage(
                "environment",
                "backend, devices, versions, data checksums",
                self.environment,
            ),
            Stage(
                "benchmark-train",
                "training speed against the PyTorch peer",
                self.benchmark_train,
            ),
            Stage(
                "benchmark-decode",
                "decoding speed, cached against recompute",
                self.benchmark_decode,
            ),
            Stage(
                "model",
                "the model to fine-tune",
                self.model,
            ),
            Stage(
                "finetune",
                "fine-tuning each strategy x seed",
                self.finetune,
                needs=("model",),
                inputs=runs,
            ),
            Stage(
                "compare",
                "comparison with the published figures",
                self.compare,
                needs=("finetune",),
                inputs=runs,
            ),
        ]

    def environment_facts(self):
        """The environment stage's facts; measured here when that stage
        was skipped (precision and device decide the other stages)."""
        facts = self.pipeline.record("environment").get("result")
        if facts is None:
            if self._facts is None:
                self._facts = self.environment()
            facts = self._facts
        return facts

    def require_gpu(self, what):
        """BERT-base work without a GPU takes days: refuse unless asked."""
        facts = self.environment_facts()
        if (
            not self.size["needs_gpu"]
            or self.args.allow_cpu
            or facts.get("accelerator") != "cpu"
        ):
            return
        reason = (
            f"no GPU: {what} runs at BERT-base size, which needs one "
            "(--allow-cpu runs it on the CPU anyway; --smoke at toy size)"
        )
        if facts.get("gpu_build_problem"):
            reason += f"; {facts['gpu_build_problem']}"
        raise Unavailable(reason)

    # --- stages --------------------------------------------------------

    def environment(self):
        from tasks.lib.environment import describe_environment
        from tasks.lib.environment import gpu_build_problem

        facts = describe_environment()
        facts["gpu_build_problem"] = gpu_build_problem(facts)
        facts["packages"] = package_versions()
        facts["data"] = data_checksums(self.data_files())
        return facts

    def data_files(self):
        files = self.fine_tuning_files()
        if not self.args.model_dir:
            files += [*self.args.corpus, self.args.vocab]
        return files

    def benchmark_train(self):
        from tasks import benchmark

        self.require_gpu("the training benchmark")
        facts = self.environment_facts()
        argv = [
            *self.size["benchmark_train"],
            "--precision",
            facts["precision"],
            "--out",
            str(self.out / "benchmark-train.md"),
        ]
        peer_missing = peer_problem(facts["accelerator"])
        if peer_missing:
            argv.append("--no-peer")
        rows = run_benchmark(benchmark, argv)
        return {
            "command": benchmark_command(argv),
            "rows": rows,
            "table": (self.out / "benchmark-train.md").read_text("utf-8"),
            "peer": peer_missing or "measured in the same process",
        }

    def benchmark_decode(self):
        from tasks import benchmark

        self.require_gpu("the decoding benchmark")
        argv = list(self.size["benchmark_decode"])
        rows = run_benchmark(benchmark, argv)
        return {"command": benchmark_command(argv), "rows": rows}

    def model(self):
        if self.args.model_dir:
            return self.given_model()
        self.require_gpu("pretraining")
        from tasks.lib import pretraining_plan

        return pretraining_plan.pretrain(
            out=self.out / "model",
            base_argv=self.pretrain_argv(),
            budget_seconds=60 * self.args.budget_minutes,
            size=self.size,
            mlm_share=MLM_SHARE,
            margin=BUDGET_MARGIN,
        )

    def pretrain_argv(self):
        facts = self.environment_facts()
        return [
            "--text",
            *map(str, self.args.corpus),
            "--vocab",
            str(self.args.vocab),
            "--precision",
            facts["precision"],
            "--no-progress",
            *self.size["pretrain"],
        ]

    def given_model(self):
        from data import sha256_of

        found = check_model_dir(self.args.model_dir)
        files = [
            found["config"],
            pathlib.Path(self.args.model_dir) / "vocab.txt",
        ]
        weights = found["weights"]
        if found["format"] == "tf":
            files += sorted(weights.parent.glob(weights.name + ".*"))
        else:
            files.append(weights)
        return {
            "source": "given",
            "model_dir": str(self.args.model_dir),
            "format": found["format"],
            "config": json.loads(found["config"].read_text("utf-8")),
            "sha256": {str(path): sha256_of(path) for path in files},
        }

    def model_dir(self):
        return self.pipeline.record("model")["result"]["model_dir"]

    def finetune_extra(self):
        """The arguments every tasks/csl_title.py run gets."""
        extra = ["--model-dir", self.model_dir(), "--no-progress"]
        if not {"--train", "--data"} & set(self.args.finetune_extra):
            extra += ["--data", str(self.args.data)]
        return extra + self.size["finetune"] + self.args.finetune_extra

    def run_dirs(self):
        return [
            self.out / "finetune" / f"{strategy}-seed{seed}"
            for strategy in self.args.strategies
            for seed in self.args.seeds
        ]

    def finetune(self):
        self.require_gpu("fine-tuning")
        extra = self.finetune_extra()
        precision = self.environment_facts()["precision"]
        started = time.perf_counter()
        for strategy in self.args.strategies:
            for seed in self.args.seeds:
                run_dir = self.out / "finetune" / f"{strategy}-seed{seed}"
                if (run_dir / "results.json").exists():
                    print(f"skip {run_dir}: finished in an earlier run")
                    continue
                argv = ["--strategy", strategy, "--seed", str(seed)]
                run_task(
                    argv + ["--out", str(run_dir), *extra],
                    precision,
                    self.args.allow_cpu,
                )
        return {
            "precision": precision,
            "command": shlex.join(
                ["python", "tasks/csl_title.py", "--strategy", "STRATEGY"]
                + ["--seed", "SEED", "--out", "DIR", *extra]
            ),
            "runs": [summarise_run(path) for path in self.run_dirs()],
            "seconds_this_invocation": round(time.perf_counter() - started),
        }

    def compare(self):
        from tasks import compare
        from tasks.lib import published

        out = self.out / "comparison"
        report = compare.build_report(self.run_dirs(), out, published="csl")
        ours = our_setting(self.run_dirs(), self.args.strategies)
        ours["precision"] = self.environment_facts().get("precision")
        differences, agreements = published.setting_differences(ours)
        if self.pipeline.record("model")["result"]["source"] == "pretrained":
            differences.append(self.corpus_overlap())
        return {
            "command": shlex.join(
                ["python", "tasks/compare.py"]
                + [str(path) for path in self.run_dirs()]
                + ["--published", "csl", "--out", str(out)]
            ),
            "table": compare.markdown_table(
                report["aggregate"], report["published"]["rows"]
            ),
            "legend": compare.legend(report["aggregate"], "csl"),
            "differences": differences,
            "agreements": agreements,
            "ours": ours,
            "files": ["table.md", "table.csv", "results.json", "metrics.png"],
        }

    def corpus_overlap(self):
        """How much of the fine-tuning data the pretraining text holds
        (lines equal after stripping): a reader must know."""
        from data import read_pairs

        documents = set()
        for path in self.args.corpus:
            with open(path, encoding="utf-8") as lines:
                documents.update(line.strip() for line in lines)
        pairs = [
            pair
            for path in self.fine_tuning_files()
            for pair in read_pairs(path)
        ]
        contents = sum(content.strip() in documents for _, content in pairs)
        titles = sum(title.strip() in documents for title, _ in pairs)
        return (
            f"pretraining: on the CSL corpus here, whose text holds {contents}"
            f" of the {len(pairs)} fine-tuning sources and {titles} of their "
            "titles verbatim; the article fine-tunes BERT-wwm as released"
        )

    def fine_tuning_files(self):
        extra = self.args.finetune_extra
        flags = ("--train", "--valid", "--test", "--data")
        given = [
            pathlib.Path(extra[extra.index(f) + 1]) for f in flags if f in extra
        ]
        return given or [self.args.data]

    # --- the whole ------------------------------------------------------

    def run(self):
        from tasks.lib import reproduce_report

        self.pipeline = pipeline_lib.Pipeline(
            self.out,
            self.settings(),
        )
        self.pipeline.state["invocations"].append(
            {
                "time": pipeline_lib.now(),
                "command": shlex.join(
                    ["python", "tasks/reproduce.py", *self.argv]
                ),
                "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
                "commit": git_commit(),
            }
        )
        self.pipeline.save()

        def write_report():
            reproduce_report.write(self.out, self.pipeline.state)

        failed = self.pipeline.run(
            self.stages(), self.args.skip, after_stage=write_report
        )
        print(f"\nReport: {self.out / 'REPORT.md'}")
        return failed


def package_versions():
    """Installed versions of the packages a figure can depend on."""
    from importlib import metadata

    versions = {}
    for name in (
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
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def data_checksums(paths):
    """sha256 and line count of each input file."""
    from data import sha256_of

    rows = []
    for path in paths:
        with open(path, "rb") as handle:
            lines = sum(1 for _ in handle)
        rows.append(
            {"path": str(path), "sha256": sha256_of(path), "lines": lines}
        )
    return rows


def peer_problem(accelerator):
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


def run_benchmark(benchmark, argv):
    """`tasks/benchmark.py`'s own functions, in this process; they print
    `sys.argv` as the command of their table, so it is set to the
    equivalent command for the call."""
    saved = sys.argv
    sys.argv = ["tasks/benchmark.py", *argv]
    try:
        args = benchmark.build_parser().parse_args(argv)
        return args.run(args)
    finally:
        sys.argv = saved


def benchmark_command(argv):
    return shlex.join(["python", "tasks/benchmark.py", *argv])


def run_task(argv, precision, allow_cpu=False):
    """One `tasks/csl_title.py` run, in this process: its own parser and
    run loop (resuming after its last finished epoch), under `--precision`
    (bf16 computes in bfloat16 and keeps float32 weights)."""
    import keras

    from tasks import csl_title
    from tasks.lib import experiment

    argv = [*argv, "--precision", precision]
    if allow_cpu:
        argv.append("--allow-cpu")
    print("run: " + shlex.join(["python", "tasks/csl_title.py", *argv]))
    keras.backend.clear_session()
    description = csl_title.__doc__.split("\n\n")[0]
    parser = experiment.build_parser(description, csl_title.DEFAULTS)
    experiment.run(parser.parse_args(argv), "csl_title")


def summarise_run(path):
    """One fine-tuning run as the report shows it."""
    results = json.loads((path / "results.json").read_text("utf-8"))
    history = results.get("history") or []
    best = results.get("best_epoch")
    valid = next((e for e in history if e["epoch"] == best), {})
    return {
        "dir": str(path),
        "strategy": results["strategy"],
        "seed": results["seed"],
        "best_epoch": best,
        "epochs": len(history),
        "valid_bleu": valid.get("bleu"),
        "test": results["test"],
        "precision": (results.get("environment") or {}).get("precision"),
        "model": results.get("model"),
    }


def our_setting(run_dirs, strategies):
    """The fine-tuning setting of our runs in `published.SETTING`'s keys;
    a value that differs between runs is listed with every variant."""
    from models.strategies import get as get_strategy

    values = {}
    for path in run_dirs:
        config = json.loads((path / "config.json").read_text("utf-8"))
        results = json.loads((path / "results.json").read_text("utf-8"))
        found = {
            key: config.get(key)
            for key in ("maxlen", "batch_size", "lr", "epochs", "title_maxlen")
        }
        found["model"] = results.get("model")
        found["data"] = describe_data(config, results)
        for key, value in found.items():
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    ours = {key: v[0] if len(v) == 1 else v for key, v in values.items()}
    seeds = sorted({int(path.name.rsplit("seed", 1)[1]) for path in run_dirs})
    ours["runs"] = f"mean ± std over {len(seeds)} seed(s) ({seeds})"
    ours["selection"] = "best epoch by validation BLEU"
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


def describe_data(config, results):
    """'N train / N valid / N test pairs' and where they came from."""
    test = next(iter(results["test"].values()), {}).get("titles")
    data = results.get("data", {})
    if "split" in data:
        split = data["split"]
        total = data["train"]["pairs"]
        valid = round(total * split["valid_fraction"])
        return (
            f"{total - valid - test} train / {valid} valid / {test} test "
            f"pairs of {pathlib.Path(data['train']['path']).name}, split "
            "by seed"
        )
    counts = " / ".join(
        f"{data.get(name, {}).get('pairs', '?')} {name}"
        for name in ("train", "valid", "test")
    )
    return f"{counts} pairs"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # Allocate GPU memory on demand (before any backend is imported), so
    # that JAX or TensorFlow and the PyTorch peer share one GPU in one
    # process, and the fine-tuning processes find memory free.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    args = parse_args(argv)
    check_strategies(args.strategies)
    if args.model_dir:
        check_model_dir(args.model_dir)
    try:
        failed = Reproduction(args, argv).run()
    except KeyboardInterrupt:
        print(
            "\nInterrupted: run the same command again to resume.",
            file=sys.stderr,
        )
        sys.exit(130)
    if failed:
        sys.exit(f"reproduce.py: failed stages: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    main()
