"""`tasks/reproduce.py --within MINUTES`: the model sizes a budget plans
at, the plan stage (calibrate, then plan with `tasks/lib/budget.py`), the
fine-tuning stage against the deadline, and the plan's part of REPORT.md.

Keras and the models are imported inside the functions that use them:
`tasks/reproduce.py --help` imports this module.
"""

import dataclasses
import pathlib
import shlex
import sys
import time

from data import read_pairs
from tasks.lib import budget
from tasks.lib import within
from tasks.lib.atomic import atomic_write_json
from tasks.lib.budget import Target
from tasks.lib.budget import Timings
from tasks.lib.markdown import table
from tasks.lib.reproduce_stages import FINETUNE_SCRIPT
from tasks.lib.reproduce_stages import summarise_run
from tasks.lib.runs import Run
from tasks.lib.stages import Unavailable

# The article's CSL setting, what a plan cuts from (CLGE's split).
ARTICLE = {
    "epochs": 20,
    "beams": [1, 2, 3],
    "train_pairs": 3000,
    "valid_pairs": 500,
    "test_pairs": 500,
}
# Per size: the model, its sequence lengths and batch, the tasks/
# csl_title.py flags of its runs (besides those the plan sets), the share
# of the time left that pretrains the model (none: a model from scratch,
# or the one given), and the least a plan keeps.
SIZES = {
    # The smoke pipeline's toy model, pretrained for a few steps.
    "smoke": {
        "shape": dict(layers=1, hidden=32, heads=2, intermediate=64),
        "maxlen": 64,
        "title_maxlen": 8,
        "batch": 8,
        "flags": "--lr 1e-3 --eval-batch-size 16",
        "pretrain_share": 0.15,
        "least": dict(min_epochs=1, min_pairs=60, min_valid=6, min_seeds=1),
    },
    # A CPU without a checkpoint: a small model from scratch (pretraining
    # one on a CPU in minutes teaches it less than the fine-tuning does).
    # It writes one generic title for the first 6-7 epochs on 800 pairs
    # (its validation titles were varied from the 8th on, for every seed
    # tried), hence at least 10.
    "cpu": {
        "shape": dict(layers=2, hidden=128, heads=4, intermediate=256),
        "maxlen": 128,
        "title_maxlen": 24,
        "batch": 16,
        "flags": "--lr 1e-3 --warmup-steps 100",
        "pretrain_share": 0.0,
        "least": dict(min_epochs=10, min_pairs=1000, min_valid=50, min_seeds=2),
    },
    # A GPU without a checkpoint: BERT-base pretrained on the CSL corpus.
    "gpu": {
        "shape": dict(layers=12, hidden=768, heads=12, intermediate=3072),
        "maxlen": 256,
        "title_maxlen": 32,
        "batch": 16,
        "flags": "",
        "pretrain_share": 0.3,
        "least": dict(min_epochs=1, min_pairs=200, min_valid=50, min_seeds=1),
    },
}


def size_name(smoke: bool, model_dir, accelerator: str) -> str:
    """'smoke', 'given' (--model-dir: its own shape), 'cpu' or 'gpu'."""
    if smoke:
        return "smoke"
    if model_dir:
        return "given"
    return "cpu" if accelerator == "cpu" else "gpu"


def size_of(name: str, model_dir=None) -> dict:
    """A size of SIZES; 'given' is the gpu size with the checkpoint's
    shape and no pretraining."""
    if name != "given":
        return SIZES[name]
    import json

    from models.config import find_config_file

    config = json.loads(find_config_file(model_dir).read_text("utf-8"))
    shape = dict(
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        heads=config["num_attention_heads"],
        intermediate=config["intermediate_size"],
    )
    return {**SIZES["gpu"], "shape": shape, "pretrain_share": 0.0}


def from_scratch(result: dict) -> bool:
    """Do the planned runs start from random weights (no checkpoint and
    no pretraining)?"""
    plan = result["plan"]
    return result["size"] != "given" and not plan["stages"]["model"]


def model_flags(random: bool, size: dict, vocab) -> list[str]:
    """The flags that make a run's model: a random one of the size, or
    none (the model stage's --model-dir)."""
    flags = shlex.split(size["flags"])
    if not random:
        return flags
    shape = size["shape"]
    for key in ("layers", "hidden", "heads", "intermediate"):
        flags += [f"--{key}", str(shape[key])]
    return ["--vocab", str(vocab), *flags]


def length_flags(size: dict) -> list[str]:
    return [
        "--maxlen",
        str(size["maxlen"]),
        "--title-maxlen",
        str(size["title_maxlen"]),
        "--batch-size",
        str(size["batch"]),
    ]


def calibration_shape(size, vocab, data, beams) -> dict:
    """What `within.calibrate` needs: the model's shape and vocabulary
    (simplified, as the runs load it), lengths, batch and sources."""
    from data import Tokenizer
    from data import load_vocab
    from data.vocab import SEQ2SEQ_TOKENS

    token_dict, _ = load_vocab(
        str(vocab), simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    source_maxlen = size["maxlen"] - size["title_maxlen"]
    pairs = read_pairs(data)[: within.DECODE_SOURCES]
    return {
        **size["shape"],
        "vocab": tokenizer.vocab_size,
        "maxlen": size["maxlen"],
        "title_maxlen": size["title_maxlen"],
        "batch": size["batch"],
        "beams": beams,
        "end_id": tokenizer.end_id,
        "sources": [
            tokenizer.encode(content, maxlen=source_maxlen)[0]
            for _, content in pairs
        ],
    }


def make_target(size, strategies, seeds, data) -> Target:
    pairs = len(read_pairs(data))
    return Target(
        strategies=list(strategies),
        seeds=list(seeds),
        epochs=ARTICLE["epochs"],
        pairs=pairs,
        valid=round(pairs * 0.1),
        beams=list(ARTICLE["beams"]),
        batch_size=size["batch"],
        **{
            key: min(value, pairs) if key == "min_pairs" else value
            for key, value in size["least"].items()
        },
    )


def plan_stage(args, facts, budget_seconds, spent_seconds, vocab) -> dict:
    """Calibrate at the size this device and these arguments call for,
    plan, print the plan; the stage's result (saved with the pipeline's
    state, so a resumed run keeps it)."""
    name = size_name(args.smoke, args.model_dir, facts["accelerator"])
    size = size_of(name, args.model_dir)
    if args.model_dir:
        vocab = pathlib.Path(args.model_dir) / "vocab.txt"
    target = make_target(size, args.strategies, args.seeds, args.data)
    print(f"calibrating at the {name} size ...", flush=True)
    started = time.perf_counter()
    timings = within.calibrate(
        calibration_shape(size, vocab, args.data, target.beams),
        target.strategies,
        facts["precision"],
        probe_command(args, size, vocab, target, facts["precision"]),
    )
    spent = spent_seconds + time.perf_counter() - started
    plan = budget.plan_pipeline(
        budget_seconds, spent, timings, target, size["pretrain_share"]
    )
    random = from_scratch({"size": name, "plan": plan})
    result = {
        "size": name,
        "shape": {**size["shape"], **{k: size[k] for k in SHAPE_KEYS}},
        "flags": model_flags(random, size, vocab) + length_flags(size),
        "target": dataclasses.asdict(target),
        "plan": plan,
        "cuts": budget.cuts(plan, target, ARTICLE),
    }
    print("\n".join(plan_lines(result)), flush=True)
    return result


SHAPE_KEYS = ("maxlen", "title_maxlen", "batch")


def probe_command(args, size, vocab, target, precision):
    """strategy -> (command, run directory) of a calibration run: the task
    script at the planned size (random weights of the model's shape, or
    the given model) on the first pairs of the data, two short epochs."""
    pairs = within.probe_pairs(
        target.batch_size, target.train_share, target.pairs
    )
    flags = ["--no-progress", "--data", str(args.data), *args.finetune_extra]
    flags += ["--model-dir", str(args.model_dir)] if args.model_dir else []
    flags += model_flags(not args.model_dir, size, vocab) + length_flags(size)
    flags += within.probe_flags(pairs) + ["--precision", precision]

    def probe(strategy):
        out = pathlib.Path(args.out) / "calibration" / strategy
        command = [sys.executable, str(FINETUNE_SCRIPT), "--strategy", strategy]
        return [*command, "--out", str(out), *flags], out

    return probe


def fit_flags(fit: dict) -> list[str]:
    """tasks/csl_title.py flags of a fitted fine-tuning plan."""
    return [
        "--limit",
        str(fit["pairs"]),
        "--epochs",
        str(fit["epochs"]),
        "--valid-limit",
        str(fit["valid"]),
        "--beams",
        *map(str, fit["beams"]),
    ]


def finetune_stage(out, planned, seconds_left, extra, precision) -> dict:
    """The fine-tuning grid refitted to the seconds actually left (the
    fit saved, so a resumed stage keeps it), run against the deadline."""
    timings = Timings.from_json(planned["plan"]["timings"])
    target = Target(**planned["target"])
    workdir = pathlib.Path(out) / "finetune"
    workdir.mkdir(parents=True, exist_ok=True)
    usable = seconds_left * (1 - budget.MARGIN) - budget.COMPARE_SECONDS
    fit = within.load_or_save(
        workdir / "plan.json",
        lambda: budget.plan_finetune(usable, timings, target),
    )
    extra = [*extra, *planned["flags"], *fit_flags(fit)]
    extra += ["--precision", precision]
    deadline = time.monotonic() + seconds_left - budget.COMPARE_SECONDS
    finished, notes = within.run_within(
        FINETUNE_SCRIPT,
        fit,
        workdir,
        extra,
        timings,
        target,
        deadline,
        save=lambda fit: atomic_write_json(workdir / "plan.json", fit),
    )
    for note in notes:
        print(f"== finetune: {note}", flush=True)
    if not finished:
        raise Unavailable("; ".join(notes) or "no run finished")
    command = ["python", "tasks/csl_title.py", "--strategy", "STRATEGY"]
    command += ["--seed", "SEED", "--out", "DIR", *extra]
    return {
        "precision": precision,
        "command": shlex.join(command),
        "runs": [summarise_run(Run.load(path)) for path in finished],
        "run_dirs": [str(path) for path in finished],
        "fit": fit,
        "notes": notes,
    }


# --- the report --------------------------------------------------------------


def plan_lines(result: dict) -> list[str]:
    """The plan as printed before the stages and written in REPORT.md."""
    plan, shape = result["plan"], result["shape"]
    finetune = plan["finetune"]
    timings = plan["timings"]
    runs = ", ".join(
        f"{strategy} seed {seed}" for strategy, seed in (finetune["runs"])
    )
    lines = [
        f"Plan within {plan['budget_seconds'] / 60:g} min "
        f"({result['size']} size; calibration and environment "
        f"{plan['spent_seconds']:.0f} s):",
        "",
        f"- model: {shape['layers']} layers x {shape['hidden']} hidden, "
        f"{shape['heads']} heads, intermediate {shape['intermediate']}; "
        f"maxlen {shape['maxlen']}, titles of at most "
        f"{shape['title_maxlen']} tokens, batch {shape['batch']}",
        f"- pretraining: {plan['stages']['model']:.0f} s"
        if plan["stages"]["model"]
        else "- pretraining: none",
        f"- fine-tuning: {len(finetune['runs'])} runs ({runs}), "
        f"{finetune['epochs']} epochs on {finetune['pairs']} pairs "
        f"({finetune['valid']} validation, {finetune['test']} test), beams "
        f"{' '.join(map(str, finetune['beams']))}; predicted "
        f"{finetune['seconds']:.0f} s of {plan['stages']['finetune']:.0f} s"
        + (
            " (does not fit: no run will start)"
            if finetune["seconds"] > plan["stages"]["finetune"]
            else ""
        ),
        f"- calibration: {fmt_map(timings['step'], 1000, 'ms')} a training "
        f"step; {fmt_map(timings['decode'], 1000, 'ms', 'beam ')} a title; "
        f"compiling {fmt_map(timings['compile'], 1, 's')}; a process start "
        f"{timings['process']:.1f} s",
    ]
    if result["cuts"]:
        lines += ["", "Cut from the article's setting:", ""]
        lines += [f"- {line}" for line in result["cuts"]]
    return lines


def fmt_map(values: dict, scale: float, unit: str, prefix="") -> str:
    return ", ".join(
        f"{prefix}{key} {value * scale:.1f} {unit}"
        for key, value in values.items()
    )


def plan_section(state: dict) -> list[str]:
    """REPORT.md's plan section: the plan, what it cut, and each stage's
    measured wall time against its planned one."""
    record = state["stages"].get("plan", {})
    if record.get("status") != "done":
        return []
    result = record["result"]
    lines = ["## Plan within the budget", "", *plan_lines(result), ""]
    planned = dict(result["plan"]["stages"])
    planned["plan"] = result["plan"]["spent_seconds"]
    rows = []
    total = 0.0
    for name, stage in state["stages"].items():
        seconds = stage.get("seconds")
        total += seconds or 0.0
        note = "; ".join((stage.get("result") or {}).get("notes", []))
        rows.append(
            [
                name,
                stage["status"],
                "" if name not in planned else f"{planned[name]:.0f}",
                "" if seconds is None else f"{seconds:.0f}",
                note or stage.get("reason", ""),
            ]
        )
    lines += table(["stage", "status", "planned s", "measured s", "note"], rows)
    lines += [
        "",
        f"Stages took {total:.0f} s in all, of a budget of "
        f"{result['plan']['budget_seconds']:.0f} s (the plan's row "
        "counts the environment and the calibration).",
    ]
    return lines
