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
    # All of it planned to end within 30 minutes on the device found:
    python tasks/reproduce.py --within 30 --out runs/reproduce-30

`--within MINUTES` first measures what a run costs here (a short run of
tasks/csl_title.py itself: its steps, compiling and process start; each
strategy's step relative to it; a decoded title), then plans, prints and
follows a plan that ends within the budget, re-planned after each run
from the wall time it took (time left over goes into further runs): the model
size for the device (a small model from scratch on a CPU, BERT-base on a
GPU, or --model-dir's), pretraining steps (none with --model-dir),
epochs, pairs, beams, and the runs kept (the article's three strategies
with seed 0, then seed 1, ...). It cuts the benchmarks, says in REPORT.md
what else it cut from the article's setting, and stops a stage that would
run past the budget. With --smoke it plans at toy size.

Arguments after `--` go to every tasks/csl_title.py run (e.g. `--
--train train.tsv --valid val.tsv --test test.tsv` for CLGE's split).
A machine without TensorFlow reads Google checkpoints once converted, on a
machine with TensorFlow: `python -m weights.convert
DIR/bert_model.ckpt DIR/model.safetensors`.
"""

import os
import pathlib
import shlex
import sys
import time

from tasks.lib import pretraining_plan
from tasks.lib import reproduce_options
from tasks.lib import reproduce_stages
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.cli import split_extra
from tasks.lib.reproduce_options import run_benchmark
from tasks.lib.reproduce_options import run_pretrain
from tasks.lib.reproduce_stages import SIZES
from tasks.lib.reproduce_stages import benchmark_command
from tasks.lib.reproduce_stages import check_model_dir
from tasks.lib.reproduce_stages import given_model
from tasks.lib.reproduce_stages import our_setting
from tasks.lib.reproduce_stages import peer_problem
from tasks.lib.reproduce_within import from_scratch
from tasks.lib.rundir import git_commit
from tasks.lib.runs import run_name
from tasks.lib.stages import Pipeline
from tasks.lib.stages import Stage
from tasks.lib.stages import Unavailable
from tasks.lib.stages import now

# The budget of --within counts from here (the imports above are light;
# Keras loads later, when the strategies are checked).
STARTED = time.perf_counter()
# Pretraining: share of the steps for whole-word MLM (the rest: UniLM), and
# of the budget kept back for what the step time does not cover (saving
# checkpoints, exporting, a slower step than the calibration's).
MLM_SHARE = 0.75
BUDGET_MARGIN = 0.1


def build_parser():
    return reproduce_options.build_parser(__doc__)


def parse_args(argv):
    """Arguments, and those after `--` that go to tasks/csl_title.py."""
    argv, extra = split_extra(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.finetune_extra = extra
    size = SIZES["smoke" if args.smoke else "full"]
    seeds = [0, 1, 2] if args.within else size["seeds"]
    args.seeds = args.seeds if args.seeds is not None else seeds
    if args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if args.within is not None and args.within <= 0:
        parser.error(f"--within {args.within:g}: expected a positive number")
    if args.within and set(extra) & {"--train", "--data", "--limit"}:
        parser.error(
            "--within plans its runs on --data: give it no "
            "--train/--data/--limit after --"
        )
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
            "within": args.within,
        }

    def stages(self):
        runs = {"strategies": self.args.strategies, "seeds": self.args.seeds}
        planned = []
        if self.args.within:
            planned = [
                Stage(
                    "plan",
                    f"calibration and the plan within {self.args.within:g} min",
                    self.plan,
                    needs=("environment",),
                )
            ]
        return [
            Stage(
                "environment",
                "backend, devices, versions, data checksums",
                self.environment,
            ),
            *planned,
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

    def cut_by_budget(self):
        if self.args.within:
            raise Unavailable(
                "cut by --within (time it apart: tasks/benchmark.py)"
            )

    def benchmark_train(self):
        self.cut_by_budget()
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
        self.cut_by_budget()
        self.require_gpu("the decoding benchmark")
        argv = list(self.size["benchmark_decode"])
        rows = run_benchmark(argv)
        return {"command": benchmark_command(argv), "rows": rows}

    def plan(self):
        from tasks.lib.reproduce_within import plan_stage

        return plan_stage(
            self.args,
            self.environment_facts(),
            60 * self.args.within,
            self.used_seconds(),
            self.args.vocab,
        )

    def planned(self):
        return self.pipeline.record("plan").get("result")

    def used_seconds(self):
        """Wall time of the pipeline so far, earlier invocations too."""
        return self.used_before + time.perf_counter() - self.started

    def model(self):
        if self.args.model_dir:
            return given_model(self.args.model_dir)
        planned = self.planned()
        if planned and from_scratch(planned):
            return reproduce_stages.random_model(planned["shape"])
        self.require_gpu("pretraining")
        budget = 60 * self.args.budget_minutes
        if planned:
            budget = planned["plan"]["stages"]["model"]
        return pretraining_plan.pretrain(
            out=self.out / "model",
            base_argv=self.pretrain_argv(),
            budget_seconds=budget,
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
        extra = ["--no-progress"]
        if model_dir:
            extra += ["--model-dir", model_dir]
        if not {"--train", "--data"} & set(self.args.finetune_extra):
            extra += ["--data", str(self.args.data)]
        if not self.planned():
            extra += self.size["finetune"]
        return extra + self.args.finetune_extra

    def run_dirs(self):
        if self.planned():
            return self.pipeline.record("finetune")["result"]["run_dirs"]
        return [
            self.out / "finetune" / run_name(strategy, seed)
            for strategy in self.args.strategies
            for seed in self.args.seeds
        ]

    def finetune(self):
        if self.planned():
            from tasks.lib.reproduce_within import finetune_stage

            return finetune_stage(
                self.out,
                self.planned(),
                60 * self.args.within - self.used_seconds(),
                self.finetune_extra(),
                self.environment_facts()["precision"],
            )
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
        source = self.pipeline.record("model")["result"]["source"]
        if source == "pretrained":
            notes.append(self.corpus_overlap())
        elif source == "random":
            notes.append(reproduce_stages.FROM_SCRATCH)
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
        self.started = STARTED
        self.used_before = self.pipeline.state.get("used_seconds", 0.0)
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
            self.pipeline.state["used_seconds"] = round(self.used_seconds(), 1)
            self.pipeline.save()
            reproduce_report.write(self.out, self.pipeline.state)

        failed = self.pipeline.run(
            self.stages(), self.args.skip, after_stage=write_report
        )
        print(f"\nReport: {self.out / 'REPORT.md'}")
        return failed


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
