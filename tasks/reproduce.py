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
import os
import pathlib
import shlex
import sys

from tasks.lib import pretraining_plan
from tasks.lib import reproduce_stages
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.cli import split_extra
from tasks.lib.reproduce_stages import SIZES
from tasks.lib.reproduce_stages import benchmark_command
from tasks.lib.reproduce_stages import check_model_dir
from tasks.lib.reproduce_stages import given_model
from tasks.lib.reproduce_stages import our_setting
from tasks.lib.reproduce_stages import peer_problem
from tasks.lib.rundir import git_commit
from tasks.lib.runs import add_grid_options
from tasks.lib.runs import run_name
from tasks.lib.stages import Pipeline
from tasks.lib.stages import Stage
from tasks.lib.stages import Unavailable
from tasks.lib.stages import now

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
# Pretraining: share of the steps for whole-word MLM (the rest: UniLM), and
# of the budget kept back for what the step time does not cover (saving
# checkpoints, exporting, a slower step than the calibration's).
MLM_SHARE = 0.75
BUDGET_MARGIN = 0.1


def build_parser():
    parser = ArgumentParser(description=__doc__, formatter_class=_Formatter)
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
    add_grid_options(
        parser,
        "strategies to fine-tune (any registered one)",
        "fine-tuning seeds (default 0 1 2; with --smoke 0)",
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
    argv, extra = split_extra(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.finetune_extra = extra
    size = SIZES["smoke" if args.smoke else "full"]
    args.seeds = args.seeds if args.seeds is not None else size["seeds"]
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if not set(extra) & {"--train", "--data"} and not args.data.is_file():
        what = "a directory" if args.data.is_dir() else "no such file"
        parser.error(f"--data {args.data}: {what}")
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
        fail(
            f"unknown strategies {unknown}; registered: "
            f"{', '.join(sorted(STRATEGIES))}"
        )


class Reproduction:
    """The stages, over one output folder and one set of arguments."""

    def __init__(self, args, argv):
        self.args = args
        self.argv = argv
        self.size = SIZES["smoke" if args.smoke else "full"]
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
            Stage("model", "the model to fine-tune", self.model),
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

    def fine_tuning_files(self):
        return reproduce_stages.fine_tuning_files(
            self.args.finetune_extra, self.args.data
        )

    def data_files(self):
        files = self.fine_tuning_files()
        if not self.args.model_dir:
            files += [*self.args.corpus, self.args.vocab]
        return files

    # --- stages --------------------------------------------------------

    def environment(self):
        return reproduce_stages.environment(self.data_files())

    def benchmark_train(self):
        self.require_gpu("the training benchmark")
        facts = self.environment_facts()
        table = self.out / "benchmark-train.md"
        argv = [*self.size["benchmark_train"], "--precision"]
        argv += [facts["precision"], "--out", str(table)]
        peer_missing = peer_problem(facts["accelerator"])
        if peer_missing:
            argv.append("--no-peer")
        rows = run_benchmark(argv)
        return {
            "command": benchmark_command(argv),
            "rows": rows,
            "table": table.read_text("utf-8"),
            "peer": peer_missing or "measured in the same process",
        }

    def benchmark_decode(self):
        self.require_gpu("the decoding benchmark")
        argv = list(self.size["benchmark_decode"])
        rows = run_benchmark(argv)
        return {"command": benchmark_command(argv), "rows": rows}

    def model(self):
        if self.args.model_dir:
            return given_model(self.args.model_dir)
        self.require_gpu("pretraining")
        return pretraining_plan.pretrain(
            out=self.out / "model",
            base_argv=self.pretrain_argv(),
            budget_seconds=60 * self.args.budget_minutes,
            size=self.size,
            mlm_share=MLM_SHARE,
            margin=BUDGET_MARGIN,
            train=run_pretrain,
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

    def finetune_extra(self):
        """The arguments every tasks/csl_title.py run gets."""
        model_dir = self.pipeline.record("model")["result"]["model_dir"]
        extra = ["--model-dir", model_dir, "--no-progress"]
        if not {"--train", "--data"} & set(self.args.finetune_extra):
            extra += ["--data", str(self.args.data)]
        return extra + self.size["finetune"] + self.args.finetune_extra

    def run_dirs(self):
        return [
            self.out / "finetune" / run_name(strategy, seed)
            for strategy in self.args.strategies
            for seed in self.args.seeds
        ]

    def finetune(self):
        self.require_gpu("fine-tuning")
        return reproduce_stages.finetune(
            self.out / "finetune",
            self.args.strategies,
            self.args.seeds,
            self.finetune_extra(),
            self.environment_facts()["precision"],
            self.args.allow_cpu,
        )

    def compare(self):
        ours = our_setting(self.run_dirs(), self.args.strategies)
        ours["precision"] = self.environment_facts().get("precision")
        notes = []
        if self.pipeline.record("model")["result"]["source"] == "pretrained":
            notes.append(self.corpus_overlap())
        return reproduce_stages.compare(
            self.out / "comparison", self.run_dirs(), ours, notes
        )

    def corpus_overlap(self):
        return reproduce_stages.corpus_overlap(
            self.args.corpus, self.fine_tuning_files()
        )

    # --- the whole ------------------------------------------------------

    def run(self):
        """Every stage not done before; returns the names of failed ones."""
        from tasks.lib import reproduce_report

        self.pipeline = Pipeline(self.out, self.settings())
        command = ["python", "tasks/reproduce.py", *self.argv]
        self.pipeline.state["invocations"].append(
            {
                "time": now(),
                "command": shlex.join(command),
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


def run_benchmark(argv):
    """`tasks/benchmark.py`'s own functions, in this process; they print
    `sys.argv` as the command of their table, so it is set to the
    equivalent command for the call."""
    from tasks.lib.benchmarks import build_parser

    saved = sys.argv
    sys.argv = ["tasks/benchmark.py", *argv]
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    finally:
        sys.argv = saved


def run_pretrain(argv):
    """One `tasks/pretrain.py` run, in this process (a pretraining stage
    interrupted here leaves no process behind to write into its folder)."""
    import keras

    from tasks.lib.pretraining_options import build_parser
    from tasks.lib.pretraining_run import run

    keras.backend.clear_session()
    return run(build_parser("").parse_args(argv))


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
        return 130
    if failed:
        print(
            f"reproduce.py: failed stages: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, prog="reproduce.py"))
