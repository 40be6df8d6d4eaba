"""The command line of `pretrain.py`: the corpus, the model to start from
(or the shape of a fresh one), the objective and the training schedule,
and the checks of every option before anything is read or built.

Nothing here imports Keras: `--help` and a mistyped option answer before
a backend starts.
"""

import argparse
import pathlib

from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import check_files
from tasks.lib.cli import fail
from tasks.lib.options import add_checkpointing_option
from tasks.lib.options import add_counts
from tasks.lib.options import add_device_options
from tasks.lib.options import add_progress_option
from tasks.lib.options import add_shape_options
from tasks.lib.options import check_counts

# Masked LM, UniLM seq2seq, or a per-batch mix of the two.
OBJECTIVES = ("mlm", "unilm", "mix")
# The shape of a fresh model (no --init).
FRESH_SHAPE = {"layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024}
# The integer options, `{flag: (default, least, help)}`, each declared in
# its group below and checked by `check_options`.
COUNTS = {
    "--limit": (None, 1, "use only the first N documents (default: all)"),
    "--target-len": (32, 1, "most tokens of a UniLM target span"),
    "--seq-len": (128, 8, "tokens per sequence (short documents are packed)"),
    "--batch-size": (32, 1, "sequences per step"),
    "--steps": (10000, 1, "training steps in all (raise it to train on)"),
    "--warmup": (None, 0, "warm-up steps (default: 6%% of --steps)"),
    "--log-every": (50, 1, "steps per log.jsonl line"),
    "--checkpoint-every": (
        1000,
        1,
        "steps between checkpoints (resume points)",
    ),
    "--seed": (0, 0, "seeds masking, batch order and initialisation"),
}


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description)
    parser.add_argument(
        "--text",
        nargs="+",
        required=True,
        help="plain text files, one document a line",
    )
    add_counts(parser, COUNTS, "--limit")
    parser.add_argument("--out", default="runs/pretrain", help="run directory")
    add_model_options(parser.add_argument_group("model"))
    add_objective_options(parser.add_argument_group("objective"))
    group = parser.add_argument_group("training")
    add_training_options(group)
    add_progress_option(group, "a log line every --log-every steps")
    add_device_options(parser)
    return parser


def add_model_options(group):
    group.add_argument(
        "--init",
        help="checkpoint to continue from (any "
        "format weights.load_checkpoint reads) or a model "
        "directory with its config; none: a fresh model",
    )
    group.add_argument(
        "--config", help="config of --init when it is not beside the checkpoint"
    )
    group.add_argument("--vocab", help="vocab.txt (default: --init's)")
    add_shape_options(group, FRESH_SHAPE, "without --init")


def add_objective_options(group):
    add = group.add_argument
    add(
        "--objective",
        default="mlm",
        choices=OBJECTIVES,
        help="masked LM, UniLM seq2seq, or both (by batch)",
    )
    add(
        "--unilm-ratio",
        type=float,
        default=0.5,
        help="share of UniLM batches with --objective mix",
    )
    add(
        "--whole-word",
        action="store_true",
        help="mask whole jieba words (BERT-wwm)",
    )
    add(
        "--mask-rate",
        type=float,
        default=0.15,
        help="share of tokens selected for MLM",
    )
    add_counts(group, COUNTS, "--target-len")


def add_training_options(group):
    add_counts(group, COUNTS, "--seq-len", "--batch-size", "--steps")
    add = group.add_argument
    add(
        "--lr",
        type=float,
        default=5e-4,
        help="peak learning rate (1e-4..5e-5 to continue from BERT)",
    )
    add_counts(group, COUNTS, "--warmup")
    add(
        "--decay",
        default="linear",
        choices=["linear", "cosine"],
        help="learning-rate decay after the warm-up",
    )
    add(
        "--weight-decay",
        type=float,
        default=0.01,
        help="AdamW decay (not of biases and LayerNorm)",
    )
    add_counts(group, COUNTS, "--log-every", "--checkpoint-every", "--seed")
    add_checkpointing_option(group)


def unilm_share(args) -> float:
    """The share of UniLM batches that --objective asks for."""
    return {"mlm": 0.0, "unilm": 1.0}.get(args.objective, args.unilm_ratio)


def warmup_steps(args) -> int:
    """--warmup, by default 6% of --steps."""
    return args.warmup if args.warmup is not None else args.steps * 6 // 100


def check_options(args) -> None:
    """Every option's range and the combinations, before anything is read,
    built or written (a fresh model's shape: `factory.shape_config`)."""
    check_counts(args, COUNTS)
    if args.warmup is not None and args.warmup > args.steps:
        fail(f"--warmup {args.warmup}: expected at most --steps {args.steps}")
    for flag, value in (
        ("--unilm-ratio", args.unilm_ratio),
        ("--mask-rate", args.mask_rate),
    ):
        if not 0 <= value <= 1:
            fail(f"{flag} {value}: expected a value in [0, 1]")
    if not args.lr > 0:
        fail(f"--lr {args.lr}: expected a learning rate above 0")
    if not args.weight_decay >= 0:
        fail(f"--weight-decay {args.weight_decay}: expected 0 or more")
    if args.objective != "mlm" and args.seq_len - 3 - args.target_len < 1:
        fail(
            f"--target-len {args.target_len} with --seq-len {args.seq_len}: "
            "no room for a source; expected --target-len of at most "
            f"{args.seq_len - 4}"
        )
    for path in args.text:
        check_files({"--text": path})
    if args.init and not pathlib.Path(args.init).exists():
        fail(f"--init {args.init}: no such file or directory")
