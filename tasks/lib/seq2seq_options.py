"""The command line of the seq2seq tasks (`csl_title.py`,
`lcsts_summary.py`): the parser, the training defaults that depend on the
model, and the checks of every option before anything is read or built.

Nothing here imports Keras: `--help` and a mistyped option answer before
a backend starts.
"""

import argparse

from models.strategies.names import STRATEGY_NAMES
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import check_files
from tasks.lib.cli import fail
from tasks.lib.options import add_checkpointing_option
from tasks.lib.options import add_counts
from tasks.lib.options import add_device_options
from tasks.lib.options import add_progress_option
from tasks.lib.options import add_shape_options
from tasks.lib.options import check_counts
from weights import registry

# Batches are padded to a multiple of this many tokens: a compiled train step
# then sees a handful of shapes instead of one per length.
LENGTH_MULTIPLE = 32
# Hyper-parameters of the published experiments (BERT-wwm, CSL titles).
PUBLISHED = {"epochs": 20, "lr": 1e-5, "warmup_steps": 0}
# A randomly initialised model, e.g. the built-in default. On the synthetic
# pairs it learns to copy the first sentence and stop (test ROUGE-L above
# 0.9 at beam 1) in 9 epochs of 60 steps, mostly in epochs 3 to 7. A BERT
# (post-LayerNorm) trained from scratch needs the warm-up: without it at
# 1e-3, or with it at 2e-3, it stalls on characters at random; 64 wide
# learns the copy too slowly; dropout only slows it down here.
TINY = {
    "epochs": 9,
    "lr": 1e-3,
    "warmup_steps": 100,
    "layers": 2,
    "hidden": 128,
    "heads": 4,
    "intermediate": 256,
    "dropout": 0.0,
    "pairs": 1200,
}
# What the model flags are ignored for.
RANDOM_MODEL_ONLY = "used only without --config/--model-dir"


def _model_dependent(text: str, key: str) -> str:
    """The help of an option whose default `fill_training_defaults` sets."""
    return (
        f"{text}; default {PUBLISHED[key]} with a checkpoint, "
        f"{TINY[key]} for a random model"
    )


# The integer options, `{flag: (default, least, help[, metavar])}`, each
# declared in its group below and checked by `check_options`; the task
# sets --title-maxlen's default, `fill_training_defaults` those of
# --epochs and --warmup-steps.
COUNTS = {
    "--limit": (None, 1, "use only the first N pairs of each file"),
    "--title-maxlen": (None, 1, "max generated tokens"),
    "--batch-size": (16, 1, "training pairs per step"),
    "--length-multiple": (
        LENGTH_MULTIPLE,
        1,
        "pad training batches (sorted by length within windows) to a "
        "multiple of this: smaller wastes fewer tokens but compiles more "
        "shapes (`python tasks/benchmark.py padding`)",
    ),
    "--epochs": (None, 1, _model_dependent("epochs to train", "epochs")),
    "--warmup-steps": (
        None,
        0,
        _model_dependent(
            "steps of linear learning-rate warm-up from 0, then constant",
            "warmup_steps",
        ),
    ),
    "--min-length": (
        1,
        1,
        "bert4keras's minlen: an end token is honoured only from the "
        "N-th generated token on",
        "N",
    ),
    "--valid-limit": (None, 1, "score at most N validation pairs per epoch"),
    "--eval-batch-size": (
        None,
        1,
        "sources decoded together (default: sized by the GPU's free "
        "memory, 32 on a CPU)",
    ),
    "--seed": (
        0,
        0,
        "seed of initialisation, batch order, data split and sampling",
    ),
}


def build_parser(description: str, defaults: dict) -> argparse.ArgumentParser:
    """The command line of a task; `defaults` sets maxlen/title_maxlen."""
    parser = ArgumentParser(description=description)
    add_strategy_options(parser)
    add_model_options(
        parser.add_argument_group("model (none given: tiny random BERT)")
    )
    add_data_options(
        parser.add_argument_group("data (none given: synthetic pairs)")
    )
    group = parser.add_argument_group("training and evaluation")
    add_training_options(group, defaults)
    add_evaluation_options(group)
    add_run_options(group)
    add_device_options(parser)
    return parser


def add_strategy_options(parser):
    parser.add_argument(
        "--strategy",
        default="baseline",
        choices=STRATEGY_NAMES,
        help="training strategy against exposure bias",
    )
    parser.add_argument(
        "--strategy-option",
        action="append",
        default=[],
        metavar="K=V",
        help="strategy option, e.g. token_rate=0.3 or epsilon=1 (repeat "
        "for more; a wrong key lists the strategy's options)",
    )


def add_model_options(group):
    group.add_argument(
        "--model",
        choices=sorted(registry.PRESETS),
        help="a known Chinese checkpoint: alone, says where to download "
        "it; with --model-dir, checks that copy (files, sha256)",
    )
    group.add_argument(
        "--model-dir",
        help="directory with config, vocab.txt "
        "and a checkpoint (Google, Hugging Face or ours)",
    )
    group.add_argument(
        "--config",
        help="bert_config.json / config.json (default: --model-dir's)",
    )
    group.add_argument(
        "--checkpoint",
        help="checkpoint file or TF prefix (default: --model-dir's)",
    )
    group.add_argument("--vocab", help="vocab.txt (default: --model-dir's)")
    group.add_argument(
        "--no-simplify",
        action="store_true",
        help="keep the whole vocabulary (no keep_tokens)",
    )
    add_shape_options(group, TINY, RANDOM_MODEL_ONLY)
    group.add_argument(
        "--dropout",
        type=float,
        default=TINY["dropout"],
        help=f"dropout of a randomly initialised model ({RANDOM_MODEL_ONLY})",
    )


def add_data_options(group):
    group.add_argument("--train", help="training pairs file")
    group.add_argument("--valid", help="validation pairs file")
    group.add_argument("--test", help="test pairs file")
    group.add_argument(
        "--data", help="one pairs file to split into train/valid/test by --seed"
    )
    for split, use in (("valid", "validation"), ("test", "the test")):
        group.add_argument(
            f"--{split}-fraction",
            type=float,
            default=0.1,
            help=f"share of --data held out for {use}",
        )
    add_counts(group, COUNTS, "--limit")
    group.add_argument(
        "--format",
        default="auto",
        choices=["auto", "clge", "csl"],
        help="clge: title<TAB>content; csl: prefix<TAB>abstract<TAB>title",
    )
    group.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip and count malformed lines instead of stopping at the first",
    )


def add_training_options(group, defaults):
    group.add_argument(
        "--maxlen",
        type=int,
        default=defaults["maxlen"],
        help="max tokens of source + title",
    )
    add_counts(
        group, COUNTS, "--title-maxlen", "--batch-size", "--length-multiple"
    )
    group.set_defaults(title_maxlen=defaults["title_maxlen"])
    add_model_dependent_options(group)
    add_checkpointing_option(group)
    group.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        metavar="EPS",
        help="label smoothing of the training cross-entropy (any "
        "strategy); validation scores stay unsmoothed",
    )
    group.add_argument(
        "--ema",
        type=float,
        metavar="DECAY",
        help="keep an exponential moving average of the weights with this "
        "decay (Keras's use_ema, e.g. 0.999); validation, best.weights.h5 "
        "and the test use the averaged weights; default: none",
    )


def add_model_dependent_options(group):
    """--epochs, --lr, --warmup-steps: their defaults depend on whether a
    checkpoint is fine-tuned (`fill_training_defaults`)."""
    add_counts(group, COUNTS, "--epochs")
    group.add_argument(
        "--lr", type=float, help=_model_dependent("Adam learning rate", "lr")
    )
    add_counts(group, COUNTS, "--warmup-steps")


def add_evaluation_options(group):
    group.add_argument(
        "--beams",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="beam sizes scored on the test set",
    )
    group.add_argument(
        "--length-penalty",
        type=float,
        metavar="ALPHA",
        help="beam search answers with the best GNMT score "
        "log p / ((5 + |y|) / 6)^ALPHA among complete titles; default: "
        "bert4keras's rule (stop when the best beam has ended)",
    )
    add_counts(
        group, COUNTS, "--min-length", "--valid-limit", "--eval-batch-size"
    )


def add_run_options(group):
    group.add_argument(
        "--compilation-cache",
        metavar="DIR",
        help="JAX: keep compiled train and decoding steps in DIR, so a new "
        "or resumed run loads them instead of compiling again",
    )
    group.add_argument(
        "--data-parallel",
        action="store_true",
        help="train on all local devices (JAX: "
        "keras.distribution.DataParallel; TensorFlow: "
        "MirroredStrategy); --batch-size is the global batch",
    )
    add_counts(group, COUNTS, "--seed")
    group.add_argument(
        "--init",
        metavar="RUN_DIR",
        help="start from the best weights of a finished run of the same "
        "model and data (e.g. a baseline run before scst, mrt or oracle); "
        "results.json and compare.py name it beside this run",
    )
    group.add_argument(
        "--out",
        help="run directory (default runs/<task>-<strategy>-seed<seed>)",
    )
    add_progress_option(group, "one line per epoch")


def fill_training_defaults(args, files) -> None:
    """--epochs, --lr and --warmup-steps not given on the command line.

    The published hyper-parameters fine-tune a pretrained checkpoint
    (`files.checkpoint`); a randomly initialised model needs more steps at
    a higher rate, reached after a warm-up.
    """
    defaults = PUBLISHED if files.checkpoint else TINY
    for key in ("epochs", "lr", "warmup_steps"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])


def check_options(args) -> None:
    """Every option's range and the combinations, in one pass before
    anything is read, built or written (the model's shape: when it is
    built from the flags, `factory.shape_config`)."""
    check_counts(args, COUNTS)
    for beam in args.beams:
        if beam < 1:
            fail(f"--beams {beam}: expected beam sizes of 1 or more")
    check_ranges(args)
    # [CLS] + at least one source token + [SEP] + the title + [SEP].
    if args.maxlen < args.title_maxlen + 3:
        fail(
            f"--maxlen {args.maxlen} with --title-maxlen {args.title_maxlen}: "
            f"no room for a source; expected --maxlen of at least "
            f"{args.title_maxlen + 3} (--title-maxlen + 3)"
        )
    check_data_options(args)


def check_ranges(args):
    """The options that are rates or fractions."""
    if not args.lr > 0:
        fail(f"--lr {args.lr}: expected a learning rate above 0")
    if not 0 <= args.dropout < 1:
        fail(f"--dropout {args.dropout}: expected 0 <= dropout < 1")
    if not 0 <= args.label_smoothing < 1:
        fail(f"--label-smoothing {args.label_smoothing}: expected 0 <= EPS < 1")
    if args.ema is not None and not 0 < args.ema < 1:
        fail(f"--ema {args.ema}: expected 0 < DECAY < 1")


def check_data_options(args):
    if args.data and (args.train or args.valid or args.test):
        fail("--data with --train/--valid/--test: give one or the other")
    if (args.valid or args.test) and not args.train:
        fail("--valid/--test need --train (or give one file with --data)")
    if args.train and not (args.valid and args.test):
        fail("--train needs --valid and --test (or give one file with --data)")
    for flag in ("--valid-fraction", "--test-fraction"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if not 0 <= value < 1:
            fail(f"{flag} {value}: expected 0 <= fraction < 1")
    if args.valid_fraction + args.test_fraction >= 1:
        fail(
            f"--valid-fraction {args.valid_fraction} + --test-fraction "
            f"{args.test_fraction}: expected a sum below 1 (pairs left to "
            "train on)"
        )
    flags = ("--data", "--train", "--valid", "--test")
    check_files({flag: getattr(args, flag[2:]) or None for flag in flags})


def run_options(args) -> dict:
    """What besides the strategy shapes a run's numbers (results.json)."""
    return {
        "label_smoothing": args.label_smoothing,
        "ema": args.ema,
        "length_penalty": args.length_penalty,
        "min_length": args.min_length,
    }
