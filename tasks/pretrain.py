"""Pretrain, or continue pretraining, a Chinese BERT on plain text.

Domain-adaptive pretraining before fine-tuning: masked language modelling
(`--objective mlm`, optionally `--whole-word` masking of jieba words as in
Chinese BERT-wwm), UniLM seq2seq on (span, next span) pairs cut from each
document (`--objective unilm`), or a per-batch mix of the two
(`--objective mix --unilm-ratio 0.5`). Text files hold one document a line.

The run directory `--out` gets `log.jsonl` (step, loss, tokens/s every
`--log-every` steps), a checkpoint every `--checkpoint-every` steps (the
same command again resumes after it) and, at the end, `model/`: config.json,
the simplified vocab.txt and model.safetensors, which
`tasks/csl_title.py --model-dir OUT/model` fine-tunes directly.

Usage:
    python tasks/pretrain.py \\
        --vocab ../shared/vocab/bert-base-chinese/vocab.txt \\
        --text ../shared/data/csl_corpus/abstracts.txt \\
        ../shared/data/csl_corpus/titles.txt --whole-word --out runs/pretrain
    python tasks/pretrain.py --init chinese_wwm_L-12_H-768_A-12 \\
        --text ../shared/data/csl_corpus/abstracts.txt --objective mix \\
        --lr 5e-5 --out runs/dapt-wwm
"""

import json
import pathlib
import time

import numpy as np

import tasks  # noqa: F401  (first: it silences TensorFlow's start-up)
from data import Tokenizer
from data import load_vocab
from data import pretraining as corpus
from data import save_vocab
from data.vocab import SPECIAL_TOKENS
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import check_at_least
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.environment import POLICIES
from tasks.lib.environment import check_gpu_build
from tasks.lib.environment import describe_environment
from tasks.lib.environment import summary_line
from tasks.lib.experiment import add_device_options
from tasks.lib.rundir import RunDirectory
from tasks.lib.rundir import atomic_write_json
from tasks.lib.rundir import atomic_write_text


def build_parser():
    parser = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    add = parser.add_argument
    add(
        "--text",
        nargs="+",
        required=True,
        help="plain text files, one document a line",
    )
    add(
        "--limit",
        type=int,
        help="use only the first N documents (default: all)",
    )
    add("--out", default="runs/pretrain", help="run directory")
    group = parser.add_argument_group("model")
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
    for name, default in (
        ("layers", 4),
        ("hidden", 256),
        ("heads", 4),
        ("intermediate", 1024),
    ):
        group.add_argument(
            f"--{name}",
            type=int,
            default=default,
            help=f"{name} of a fresh model (without --init)",
        )
    group = parser.add_argument_group("objective")
    group.add_argument(
        "--objective",
        default="mlm",
        choices=corpus.OBJECTIVES,
        help="masked LM, UniLM seq2seq, or both (by batch)",
    )
    group.add_argument(
        "--unilm-ratio",
        type=float,
        default=0.5,
        help="share of UniLM batches with --objective mix",
    )
    group.add_argument(
        "--whole-word",
        action="store_true",
        help="mask whole jieba words (BERT-wwm)",
    )
    group.add_argument(
        "--mask-rate",
        type=float,
        default=0.15,
        help="share of tokens selected for MLM",
    )
    group.add_argument(
        "--target-len",
        type=int,
        default=32,
        help="most tokens of a UniLM target span",
    )
    group = parser.add_argument_group("training")
    group.add_argument(
        "--seq-len",
        type=int,
        default=128,
        help="tokens per sequence (short documents are packed)",
    )
    group.add_argument(
        "--batch-size", type=int, default=32, help="sequences per step"
    )
    group.add_argument(
        "--steps",
        type=int,
        default=10000,
        help="training steps in all (raise it to train on)",
    )
    group.add_argument(
        "--lr",
        type=float,
        default=5e-4,
        help="peak learning rate (1e-4..5e-5 to continue from BERT)",
    )
    group.add_argument(
        "--warmup", type=int, help="warm-up steps (default: 6%% of --steps)"
    )
    group.add_argument(
        "--decay",
        default="linear",
        choices=["linear", "cosine"],
        help="learning-rate decay after the warm-up",
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        default=0.01,
        help="AdamW decay (not of biases and LayerNorm)",
    )
    group.add_argument(
        "--log-every", type=int, default=50, help="steps per log.jsonl line"
    )
    group.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        help="steps between checkpoints (resume points)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds masking, batch order and initialisation",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (a log line every --log-every steps)",
    )
    add_device_options(parser)
    return parser


def model_paths(args):
    """(config, checkpoint, vocab) of --init, each None when not found."""
    if not args.init:
        return args.config, None, args.vocab
    from models.bert import find_config_file

    init = pathlib.Path(args.init)
    folder = init if init.is_dir() else init.parent
    config = args.config
    if config is None:
        try:
            config = str(find_config_file(folder))
        except FileNotFoundError:
            fail(
                f"--init {init}: no config.json or bert_config.json "
                "beside it; give --config"
            )
    vocab = args.vocab or (
        str(folder / "vocab.txt") if (folder / "vocab.txt").is_file() else None
    )
    return config, str(init), vocab


def load_simplified_vocab(vocab):
    """`(token_dict, keep_tokens)` of the simplified vocabulary.

    [MASK] is kept (the simplification drops bracketed tokens otherwise).
    """
    if vocab is None:
        fail("give --vocab (or an --init directory holding vocab.txt)")
    return load_vocab(vocab, simplified=True, startswith=SPECIAL_TOKENS)


def check_options(args):
    """Every option's range and the combinations, before anything is read,
    built or written."""
    at_least = {
        "--steps": (args.steps, 1),
        "--batch-size": (args.batch_size, 1),
        "--seq-len": (args.seq_len, 8),
        "--target-len": (args.target_len, 1),
        "--log-every": (args.log_every, 1),
        "--checkpoint-every": (args.checkpoint_every, 1),
        "--seed": (args.seed, 0),
        "--limit": (args.limit, 1),
        "--warmup": (args.warmup, 0),
    }
    if not args.init:
        for name in ("layers", "hidden", "heads", "intermediate"):
            at_least[f"--{name}"] = (getattr(args, name), 1)
    check_at_least(at_least)
    if not args.init and args.hidden % args.heads:
        fail(
            f"--hidden {args.hidden}: expected a multiple of --heads "
            f"{args.heads}"
        )
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
        if not pathlib.Path(path).is_file():
            fail(f"--text {path}: no such file")
    if args.init and not pathlib.Path(args.init).exists():
        fail(f"--init {args.init}: no such file or directory")


def build_model(args, config, checkpoint, keep_tokens, vocab_size, dtype):
    from models import build_transformer_model

    if checkpoint:
        return build_transformer_model(
            config,
            checkpoint,
            application="unilm",
            keep_tokens=keep_tokens,
            dtype=dtype,
        )
    return build_transformer_model(
        config,
        application="unilm",
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(512, args.seq_len),
        dtype=dtype,
    )


def make_batches(args, tokenizer):
    """Read, tokenize and pack/cut the corpus; the batches of every step."""
    started = time.perf_counter()
    texts = corpus.read_documents(args.text, args.limit)
    if not texts:
        fail(
            f"--text {' '.join(args.text)}: no documents (every line is "
            "blank); expected one document a line"
        )
    ratio = {"mlm": 0.0, "unilm": 1.0}.get(args.objective, args.unilm_ratio)
    documents = corpus.encode_documents(
        texts, tokenizer, whole_word=args.whole_word and ratio < 1
    )
    start, end = tokenizer.start_id, tokenizer.end_id
    rows = pairs = None
    if ratio < 1:
        rows = corpus.pack_documents(documents, args.seq_len, start, end)
    if ratio > 0:
        source_len = args.seq_len - 3 - args.target_len
        rng = np.random.default_rng([args.seed, 1])
        pairs = [
            pair
            for ids, _ in documents
            for pair in corpus.cut_pairs(ids, rng, source_len, args.target_len)
        ]
    masking = {
        "vocab_size": tokenizer.vocab_size,
        "mask_id": tokenizer.mask_id,
        "rate": args.mask_rate,
        "special_ids": [tokenizer.unk_id, start, end],
    }
    batches = corpus.PretrainingBatches(
        rows,
        pairs,
        args.steps,
        args.batch_size,
        args.seq_len,
        masking,
        start,
        end,
        unilm_ratio=ratio,
        seed=args.seed,
    )
    if not (rows is not None and len(rows[0])) and not pairs:
        fail(
            f"--text {' '.join(args.text)}: nothing to train on after "
            f"tokenizing {len(texts)} documents (no packed rows, no "
            "UniLM pairs); expected longer documents or a shorter --seq-len"
        )
    print(
        f"Data:     {len(texts)} documents, "
        f"{sum(len(d[0]) for d in documents)} "
        f"tokens: {0 if rows is None else len(rows[0])} packed rows, "
        f"{len(pairs or [])} UniLM pairs "
        f"({time.perf_counter() - started:.1f}s)"
    )
    return batches


def make_trainer(model, args, precision, max_predictions):
    """AdamW on the warm-up + decay schedule, as BERT was pretrained."""
    import keras

    from models.pretraining import PretrainingTrainer
    from models.pretraining import WarmupDecay

    warmup = args.warmup if args.warmup is not None else args.steps * 6 // 100
    optimizer = keras.optimizers.AdamW(
        WarmupDecay(args.lr, warmup, args.steps, args.decay),
        weight_decay=args.weight_decay,
        beta_2=0.98,
        epsilon=1e-6,
        global_clipnorm=1.0,
    )
    # BERT decays no bias nor LayerNorm parameter.
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    if precision == "fp16":
        # fp16 gradients underflow without it; bf16 has fp32's range.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer = PretrainingTrainer(
        model, seed=args.seed, max_predictions=max_predictions
    )
    trainer.compile(optimizer=optimizer)
    return trainer


def trim_log(out, step):
    """Drop log lines written after the checkpoint we resume from."""
    path = out / "log.jsonl"
    if path.exists():
        lines = [
            line
            for line in path.read_text("utf-8").splitlines()
            if json.loads(line)["step"] <= step
        ]
        atomic_write_text(path, "".join(f"{line}\n" for line in lines))


class Meter:
    """Mean loss per objective and tokens/s over one log interval."""

    def __init__(self):
        self.losses, self.tokens = {}, 0
        self.started = time.perf_counter()

    def add(self, objective, loss, tokens):
        self.losses.setdefault(objective, []).append(loss)
        self.tokens += tokens

    def entry(self, step):
        seconds = time.perf_counter() - self.started
        losses = {
            f"{k}_loss": round(float(np.mean(v)), 4)
            for k, v in sorted(self.losses.items())
        }
        every = [x for v in self.losses.values() for x in v]
        return {
            "step": step,
            "loss": round(float(np.mean(every)), 4),
            **losses,
            "tokens_per_s": round(self.tokens / seconds, 1),
        }


def train(trainer, batches, out, state, args):
    """The loop: one batch a step, log, checkpoint; returns the state."""
    from tqdm import tqdm

    bar = tqdm(
        range(state["step"], args.steps),
        initial=state["step"],
        total=args.steps,
        unit="step",
        disable=not args.progress,
    )
    meter = Meter()
    for step in bar:
        inputs, labels = batches[step]
        logs = trainer.train_on_batch(inputs, labels, return_dict=True)
        tokens = int(np.count_nonzero(inputs[0]))
        meter.add(batches.objective(step), logs["loss"], tokens)
        state["step"], state["tokens"] = step + 1, state["tokens"] + tokens
        if state["step"] % args.log_every == 0 or state["step"] == args.steps:
            entry = meter.entry(state["step"])
            with open(out / "log.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
            bar.set_postfix(loss=entry["loss"], tok_s=entry["tokens_per_s"])
            if not args.progress:
                print(json.dumps(entry), flush=True)
            meter = Meter()
        if (
            state["step"] % args.checkpoint_every == 0
            or state["step"] == args.steps
        ):
            out.save_checkpoint(trainer, state, f"step-{state['step']}")
    return state


def export_model(model, token_dict, directory):
    """A model directory every task accepts with `--model-dir`.

    vocab.txt is the simplified vocabulary in model-row order, so it needs
    no keep_tokens; the safetensors hold Google names and no keep_tokens
    either, as their rows already follow vocab.txt.
    """
    from weights import save_safetensors

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.bert_config.save(directory / "config.json")
    save_vocab(str(directory / "vocab.txt"), token_dict)
    save_safetensors(model, directory / "model.safetensors")
    return directory


def run(args):
    """Check everything, then train; nothing is written before the checks
    (options, files, the run directory's settings, the device, the model
    and the corpus) have passed."""
    import keras

    check_options(args)
    out = RunDirectory(args.out, create=False)
    out.refuse_other_settings(vars(args))
    config, checkpoint, vocab = model_paths(args)
    token_dict, keep_tokens = load_simplified_vocab(vocab)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    environment = describe_environment(args.precision)
    check_gpu_build(environment, args.allow_cpu)
    precision = environment["precision"]
    print(f"Device:   {summary_line(environment)}")
    batches = make_batches(args, tokenizer)
    keras.utils.set_random_seed(args.seed)
    model = build_model(
        args,
        config,
        checkpoint,
        keep_tokens,
        tokenizer.vocab_size,
        POLICIES[precision],
    )
    shape = model.bert_config
    print(
        f"Model:    {'continuing ' + checkpoint if checkpoint else 'fresh'}: "
        f"{shape.num_hidden_layers} layers, {shape.hidden_size} hidden, "
        f"vocab {shape.vocab_size}; objective {args.objective}"
        f"{' (whole word)' if args.whole_word else ''}"
    )
    print(f"Run dir:  {out.path}")
    out.create()
    out.record_settings(vars(args))
    atomic_write_json(out / "environment.json", environment)
    trainer = make_trainer(model, args, precision, batches.max_labels)
    state = out.load_state({"step": 0, "tokens": 0})
    if state["checkpoint"]:
        out.restore_checkpoint(trainer, state)
        print(f"Resuming {out.path} after step {state['step']}.")
    trim_log(out, state["step"])
    state = train(trainer, batches, out, state, args)
    exported = export_model(model, token_dict, out / "model")
    print(
        f"{state['step']} steps, {state['tokens']} tokens; model "
        f"exported to {exported}"
    )
    return exported


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_main(run, args, prog="pretrain.py")


if __name__ == "__main__":
    main()
