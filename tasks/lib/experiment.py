"""The seq2seq experiment shared by `csl_title.py` and `lcsts_summary.py`.

One run: read the pairs, build a UniLM BERT (a real checkpoint, or a tiny
random model on self-made data when none is given), fine-tune it with one
training strategy, evaluate on the validation set after every epoch (beam 1),
keep the best weights by BLEU, and score the test set at every beam size.
Everything goes to `--out`, written atomically; running again with the same
`--out` resumes after the last finished epoch.
"""

import argparse
import dataclasses
import pathlib
import sys
import time

from data import Seq2SeqBatches
from data import Tokenizer
from data import load_vocab
from data import read_pairs
from data import read_pairs_with_report
from data import sha256_of
from data import split_pairs
from data import synthetic
from data.vocab import SEQ2SEQ_TOKENS
from tasks.lib.metrics import SCORING
from tasks.lib.metrics import score_titles
from tasks.lib.metrics import warn_if_collapsed
from tasks.lib.rundir import RunDirectory
from tasks.lib.rundir import atomic_write_json
from tasks.lib.rundir import atomic_write_text
from tasks.lib.rundir import git_commit
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


def build_parser(description, defaults):
    """The command line of a task; `defaults` sets maxlen/title_maxlen."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from models.strategies import STRATEGIES

    add = parser.add_argument
    add(
        "--strategy",
        default="baseline",
        choices=sorted(STRATEGIES),
        help="training strategy against exposure bias",
    )
    add(
        "--strategy-option",
        action="append",
        default=[],
        metavar="K=V",
        help="strategy option, e.g. token_rate=0.3 or epsilon=1 (repeat)",
    )
    group = parser.add_argument_group("model (none given: tiny random BERT)")
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
    group.add_argument("--config", help="bert_config.json / config.json")
    group.add_argument("--checkpoint", help="checkpoint file or prefix")
    group.add_argument("--vocab", help="vocab.txt")
    group.add_argument(
        "--no-simplify",
        action="store_true",
        help="keep the whole vocabulary (no keep_tokens)",
    )
    for name in ("layers", "hidden", "heads", "intermediate"):
        group.add_argument(
            f"--{name}",
            type=int,
            default=TINY[name],
            help=f"{name} of a randomly initialised model "
            "(used only without --config/--model-dir)",
        )
    group.add_argument(
        "--dropout",
        type=float,
        default=TINY["dropout"],
        help="dropout of a randomly initialised model "
        "(used only without --config/--model-dir)",
    )
    group = parser.add_argument_group("data (none given: synthetic pairs)")
    group.add_argument("--train", help="training pairs file")
    group.add_argument("--valid", help="validation pairs file")
    group.add_argument("--test", help="test pairs file")
    group.add_argument(
        "--data", help="one pairs file to split into train/valid/test by --seed"
    )
    group.add_argument("--valid-fraction", type=float, default=0.1)
    group.add_argument("--test-fraction", type=float, default=0.1)
    group.add_argument(
        "--limit", type=int, help="use only the first N pairs of each file"
    )
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
    group = parser.add_argument_group("training and evaluation")
    group.add_argument(
        "--maxlen",
        type=int,
        default=defaults["maxlen"],
        help="max tokens of source + title",
    )
    group.add_argument(
        "--title-maxlen",
        type=int,
        default=defaults["title_maxlen"],
        help="max generated tokens",
    )
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument(
        "--length-multiple",
        type=int,
        default=LENGTH_MULTIPLE,
        help="pad training batches (sorted by length within windows) to a "
        "multiple of this: smaller wastes fewer tokens but compiles more "
        "shapes (`python tasks/benchmark.py padding`)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        help=f"default "
        f"{PUBLISHED['epochs']} with a checkpoint, "
        f"{TINY['epochs']} for a random model",
    )
    group.add_argument(
        "--lr",
        type=float,
        help=f"Adam learning rate, "
        f"default {PUBLISHED['lr']} with a checkpoint, "
        f"{TINY['lr']} for a random model",
    )
    group.add_argument(
        "--warmup-steps",
        type=int,
        help="steps of linear learning-rate warm-up from 0, then constant; "
        f"default {PUBLISHED['warmup_steps']} with a checkpoint, "
        f"{TINY['warmup_steps']} for a random model",
    )
    group.add_argument(
        "--beams",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="beam sizes scored on the test set",
    )
    group.add_argument(
        "--valid-limit",
        type=int,
        help="score at most N validation pairs per epoch",
    )
    group.add_argument(
        "--eval-batch-size",
        type=int,
        default=None,
        help="sources decoded together (default: sized by the GPU's free "
        "memory, 32 on a CPU)",
    )
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
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--out",
        help="run directory (default runs/<task>-<strategy>-seed<seed>)",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars",
    )
    return parser


def parse_strategy_options(items):
    """`['token_rate=0.3']` -> `{'token_rate': 0.3}` (numbers parsed)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(
                f"error: --strategy-option {item!r}: expected KEY=VALUE"
            )
        options[key] = _parse_value(value)
    return options


def _parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclasses.dataclass
class ModelFiles:
    config: str | None
    checkpoint: str | None
    vocab: str | None
    sha256: dict[str, str] | None = None  # of a known checkpoint's files


def resolve_model_files(args):
    """Config, checkpoint and vocab from --model-dir or the single flags."""
    files = ModelFiles(args.config, args.checkpoint, args.vocab)
    if args.model:
        files.sha256 = check_known_model(args.model, args.model_dir)
    if args.model_dir:
        directory = pathlib.Path(args.model_dir)
        if not directory.is_dir():
            raise SystemExit(f"error: --model-dir {directory}: not a directory")
        from models.bert import find_config_file

        files.config = files.config or str(find_config_file(directory))
        files.vocab = files.vocab or str(directory / "vocab.txt")
        # load_checkpoint finds the weights file of a directory itself.
        files.checkpoint = files.checkpoint or str(directory)
    if files.checkpoint and not files.config:
        raise SystemExit(
            "error: --checkpoint needs --config (or use --model-dir)"
        )
    return files


def check_known_model(name, directory):
    """`--model NAME`: where to get it, or the sha256 of its local copy."""
    if not directory:
        raise SystemExit(
            f"error: --model {name}: give the directory holding its files "
            f"with --model-dir DIR. To get them:\n"
            + registry.download_instructions(name)
        )
    try:
        digests = registry.checksums(name, directory)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: --model {name}: {error}") from None
    for file, digest in digests.items():
        print(f"{name}: {file} sha256 {digest}")
    return digests


def is_tiny_default(args, files):
    return not (files.config or args.train or args.data)


def load_splits(args, out):
    """(train, valid, test) pairs and a description of their files."""
    if args.data:
        pairs = _read(args.data, args)
        splits = split_pairs(
            pairs, args.valid_fraction, args.test_fraction, args.seed
        )
        info = _file_info(args.data, len(pairs))
        return splits, {
            "train": info,
            "valid": info,
            "test": info,
            "split": {
                "seed": args.seed,
                "valid_fraction": args.valid_fraction,
                "test_fraction": args.test_fraction,
            },
        }
    if args.train:
        if not (args.valid and args.test):
            raise SystemExit(
                "error: --train needs --valid and --test "
                "(or give one file with --data)"
            )
        names = ("train", "valid", "test")
        splits = [_read(getattr(args, name), args) for name in names]
        return splits, {
            name: _file_info(getattr(args, name), len(pairs))
            for name, pairs in zip(names, splits)
        }
    pairs = synthetic.make_pairs(TINY["pairs"], seed=1234)
    splits = split_pairs(pairs, 0.1, 0.1, seed=0)
    info = {"path": "synthetic (data/synthetic.py)", "pairs": len(pairs)}
    return splits, {"train": info, "valid": info, "test": info}


def _read(path, args):
    if not args.skip_bad_lines:
        pairs = read_pairs(path, fmt=args.format)
    else:
        report = read_pairs_with_report(path, fmt=args.format)
        if report.skipped:
            print(
                f"{path}: skipped {len(report.skipped)} malformed lines, "
                f"first: {report.skipped[0]}",
                file=sys.stderr,
            )
        pairs = report.pairs
    return pairs[: args.limit] if args.limit else pairs


def _file_info(path, count):
    return {"path": str(path), "sha256": sha256_of(path), "pairs": count}


def load_tokenizer(args, files, out):
    """Tokenizer and keep_tokens (None when the vocabulary is kept whole)."""
    vocab = files.vocab
    if vocab is None:
        if not is_tiny_default(args, files):
            raise SystemExit(
                "error: a vocabulary is needed: give --vocab or --model-dir"
            )
        vocab = synthetic.write_vocab(out / "vocab.txt")
    if args.no_simplify:
        return Tokenizer(load_vocab(vocab), do_lower_case=True), None
    token_dict, keep_tokens = load_vocab(
        vocab, simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    return Tokenizer(token_dict, do_lower_case=True), keep_tokens


def build_model(args, files, keep_tokens, vocab_size):
    from models import build_transformer_model

    if files.config:
        return build_transformer_model(
            files.config,
            files.checkpoint,
            application="unilm",
            keep_tokens=keep_tokens,
        )
    heads = args.heads
    return build_transformer_model(
        None,
        application="unilm",
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(512, args.maxlen),
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
    )


def describe_model(files, model):
    config = model.bert_config
    shape = (
        f"{config.num_hidden_layers} layers, {config.hidden_size} "
        f"hidden, {config.num_attention_heads} heads, vocab "
        f"{config.vocab_size}"
    )
    if files.checkpoint:
        return f"{files.checkpoint} ({shape})"
    return f"random init ({shape})"


def decode_titles(decoder, tokenizer, contents, beam, args, label):
    """Titles for `contents`, decoded in batches, with a progress bar."""
    source_maxlen = args.maxlen - args.title_maxlen
    sources = [
        tokenizer.encode(text, maxlen=source_maxlen)[0] for text in contents
    ]
    # One call: the decoder sorts all sources by length and batches them.
    ids = decoder.beam_search_batch(
        sources, beam, progress=args.progress, batch_size=args.eval_batch_size
    )
    return [tokenizer.decode(output) for output in ids]


def evaluate(decoder, tokenizer, pairs, beam, args, label):
    """Decode and score; returns (metrics, predictions)."""
    started = time.perf_counter()
    titles = decode_titles(
        decoder, tokenizer, [c for _, c in pairs], beam, args, label
    )
    decoded = time.perf_counter()
    metrics = score_titles(titles, [t for t, _ in pairs])
    metrics.update(
        seconds=round(time.perf_counter() - started, 3),
        decode_seconds=round(decoded - started, 3),
        titles=len(pairs),
    )
    warn_if_collapsed(titles)
    return metrics, titles


def write_predictions(path, pairs, titles):
    lines = ["source\treference\tprediction"]
    lines += [
        f"{_one_line(c)}\t{_one_line(t)}\t{_one_line(p)}"
        for (t, c), p in zip(pairs, titles)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _one_line(text):
    return " ".join(text.split())


def fill_training_defaults(args, files):
    """--epochs, --lr and --warmup-steps not given on the command line.

    The published hyper-parameters fine-tune a pretrained checkpoint; a
    randomly initialised model needs more steps at a higher rate, reached
    after a warm-up.
    """
    defaults = PUBLISHED if files.checkpoint else TINY
    args.epochs = args.epochs or defaults["epochs"]
    args.lr = args.lr or defaults["lr"]
    if args.warmup_steps is None:
        args.warmup_steps = defaults["warmup_steps"]
    if args.warmup_steps < 0:
        raise SystemExit(
            f"error: --warmup-steps {args.warmup_steps}: expected 0 or more"
        )
    if args.length_multiple < 1:
        raise SystemExit(
            f"error: --length-multiple {args.length_multiple}: expected 1 "
            "or more"
        )
    if not 0 <= args.dropout < 1:
        raise SystemExit(
            f"error: --dropout {args.dropout}: expected 0 <= dropout < 1"
        )


def run(args, task):
    """The whole experiment; returns the results dict."""
    import keras

    from models.distribution import data_parallel
    from models.distribution import global_batch_check

    out = RunDirectory(
        args.out or f"runs/{task}-{args.strategy}-seed{args.seed}"
    )
    files = resolve_model_files(args)
    tiny = is_tiny_default(args, files)
    fill_training_defaults(args, files)
    if tiny:
        print(
            "No model or data given: running the built-in tiny default "
            "(a small random BERT on synthetic pairs; see --help for "
            "real checkpoints and data)."
        )
    settings = {k: v for k, v in vars(args).items()}
    settings["task"] = task
    out.check_settings(settings)
    if args.compilation_cache:
        from models.backend import enable_compilation_cache

        if not enable_compilation_cache(args.compilation_cache):
            print("--compilation-cache: only the JAX backend has one")
    (train, valid, test), data_info = load_splits(args, out)
    tokenizer, keep_tokens = load_tokenizer(args, files, out.path)
    with data_parallel(args.data_parallel):
        global_batch_check(args.batch_size)
        keras.utils.set_random_seed(args.seed)
        model = build_model(args, files, keep_tokens, tokenizer.vocab_size)
        trainer = build_trainer(model, args)
        summary = train_and_test(
            args,
            task,
            out,
            files,
            model,
            trainer,
            tokenizer,
            (train, valid, test),
            data_info,
        )
    print_results(summary, out)
    print_examples(out / f"predictions-beam{min(args.beams)}.tsv")
    return summary


def build_trainer(model, args):
    import keras

    from models.strategies import get as get_strategy
    from models.trainer import Seq2SeqTrainer

    strategy = get_strategy(
        args.strategy, **parse_strategy_options(args.strategy_option)
    )
    trainer = Seq2SeqTrainer(model, strategy, seed=args.seed)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate(args)))
    return trainer


def learning_rate(args):
    """`--lr`, reached by a linear warm-up over `--warmup-steps` if any.

    Keras's CosineDecay with `alpha=1` decays to 100% of its target, i.e.
    it stays constant after the warm-up. The rate depends only on the
    optimizer's step count, which is saved with every epoch, so a resumed
    run continues the schedule where it stopped.
    """
    import keras

    if not args.warmup_steps:
        return args.lr
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=1,
        alpha=1.0,
        warmup_target=args.lr,
        warmup_steps=args.warmup_steps,
    )


def train_and_test(
    args, task, out, files, model, trainer, tokenizer, splits, data_info
):
    """Train epoch by epoch (resuming), then score the best weights."""
    from models.decoding import Seq2SeqDecoder
    from models.distribution import DivisibleBatches

    train, valid, test = splits
    decoder = Seq2SeqDecoder(
        model, end_id=tokenizer._token_end_id, maxlen=args.title_maxlen
    )
    batches = Seq2SeqBatches(
        train,
        tokenizer,
        maxlen=args.maxlen,
        batch_size=args.batch_size,
        shuffle=True,
        seed=args.seed,
        bucket=True,
        length_multiple=args.length_multiple,
    )
    # Before the first step compiles: the MLM head scores this many
    # positions per row, the most targets of a training pair.
    trainer.max_targets = batches.max_targets
    if args.data_parallel:
        batches = DivisibleBatches(batches)
    state = out.load_state({"epochs_done": 0, "best": None, "history": []})
    restore(trainer, out, state)
    valid = valid[: args.valid_limit] if args.valid_limit else valid
    for epoch in range(state["epochs_done"], args.epochs):
        figures = train_one_epoch(trainer, batches, epoch, args)
        metrics, _ = evaluate(
            decoder, tokenizer, valid, 1, args, f"valid epoch {epoch + 1}"
        )
        record_epoch(trainer, model, out, state, metrics, figures)
    if state["best"]:
        model.load_weights(str(out / "best.weights.h5"))
    results = score_test(decoder, tokenizer, test, args, out)
    summary = {
        "task": task,
        "strategy": args.strategy,
        "strategy_options": parse_strategy_options(args.strategy_option),
        "seed": args.seed,
        "model": describe_model(files, model),
        "model_sha256": files.sha256,
        "data": data_info,
        "commit": git_commit(),
        "scoring": SCORING,
        "best_epoch": state["best"]["epoch"] if state["best"] else None,
        "history": state["history"],
        "test": results,
    }
    atomic_write_json(out / "results.json", summary)
    return summary


def restore(trainer, out, state):
    """Load the weights and optimizer state of the last finished epoch."""
    if not state["checkpoint"]:
        return
    out.restore_checkpoint(trainer, state)
    print(f"Resuming {out.path} after epoch {state['epochs_done']}.")


def train_one_epoch(trainer, batches, epoch, args):
    """One epoch of `fit`; its order depends only on (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one."""
    from models.backend import fit_input

    batches.set_epoch(epoch)
    trainer.check_targets(batches)  # fit sees a tf.data pipeline on TF
    verbose = 1 if args.progress else 2
    history = trainer.fit(
        fit_input(batches),
        epochs=epoch + 1,
        initial_epoch=epoch,
        verbose=verbose,
    )
    return {k: float(v[-1]) for k, v in history.history.items()}


def record_epoch(trainer, model, out, state, metrics, figures):
    """Append the epoch's scores, keep the best weights, then checkpoint."""
    epoch = state["epochs_done"] + 1
    entry = {"epoch": epoch, "train": figures, **metrics}
    print(
        f"epoch {epoch}: valid "
        + ", ".join(
            f"{k} {metrics[k]:.4f}"
            for k in ("rouge-1", "rouge-2", "rouge-l", "bleu")
        )
    )
    state["history"].append(entry)
    if state["best"] is None or metrics["bleu"] > state["best"]["bleu"]:
        from tasks.lib.rundir import atomic_save_weights

        atomic_save_weights(model, out / "best.weights.h5")
        state["best"] = {"epoch": epoch, "bleu": metrics["bleu"]}
    state["epochs_done"] = epoch
    out.save_checkpoint(trainer, state, f"epoch-{epoch}")


def score_test(decoder, tokenizer, test, args, out):
    results = {}
    for beam in args.beams:
        metrics, titles = evaluate(
            decoder, tokenizer, test, beam, args, f"test beam {beam}"
        )
        write_predictions(out / f"predictions-beam{beam}.tsv", test, titles)
        results[str(beam)] = metrics
    return results


def print_results(summary, out):
    print(
        f"\nTest results ({summary['strategy']}, best epoch "
        f"{summary['best_epoch']}), written to {out.path}/results.json:"
    )
    print("beam  rouge-1  rouge-2  rouge-l  bleu    seconds")
    for beam, m in summary["test"].items():
        print(
            f"{beam:>4}  {m['rouge-1']:.4f}   {m['rouge-2']:.4f}   "
            f"{m['rouge-l']:.4f}   {m['bleu']:.4f}  {m['seconds']:.1f}"
        )


def print_examples(path, count=3, width=60):
    """The first `count` test pairs of a predictions file, shortened to
    `width` characters, so the end of a run shows what the model does."""
    lines = path.read_text(encoding="utf-8").splitlines()[1 : count + 1]
    print(f"\nFirst {len(lines)} test titles (all in {path}):")
    for line in lines:
        source, reference, prediction = line.split("\t")
        for label, text in (
            ("source", source),
            ("reference", reference),
            ("prediction", prediction),
        ):
            short = text if len(text) <= width else text[:width] + "…"
            print(f"  {label:<11} {short}")
        print()


def main(argv, task, description, defaults):
    args = build_parser(description, defaults).parse_args(argv)
    try:
        run(args, task)
    except (OSError, ValueError) as error:
        # Bad input (a missing file, a malformed line, a checkpoint that does
        # not fit the config): one clear line, not a traceback.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "\nInterrupted: run the same command again to resume after "
            "the last finished epoch.",
            file=sys.stderr,
        )
        sys.exit(130)
    return 0
