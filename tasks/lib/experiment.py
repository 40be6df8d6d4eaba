"""The seq2seq experiment shared by `csl_title.py` and `lcsts_summary.py`.

One run: read the pairs, build a UniLM BERT (a real checkpoint, or a tiny
random model on self-made data when none is given), fine-tune it with one
training strategy, evaluate on the validation set after every epoch (beam 1),
keep the best weights by BLEU, and score the test set at every beam size.
Everything goes to `--out`, written atomically; running again with the same
`--out` resumes after the last finished epoch.
"""

import dataclasses
import pathlib
import sys
import time

import keras

from data import Seq2SeqBatches
from data import Tokenizer
from data import load_vocab
from data import read_pairs
from data import read_pairs_with_report
from data import sha256_of
from data import split_pairs
from data import synthetic
from data.vocab import SEQ2SEQ_TOKENS
from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import add_verbose
from tasks.lib.cli import check_at_least
from tasks.lib.cli import fail
from tasks.lib.cli import run_main
from tasks.lib.environment import POLICIES
from tasks.lib.environment import check_gpu_build
from tasks.lib.environment import describe_environment
from tasks.lib.environment import summary_line
from tasks.lib.metrics import SCORING
from tasks.lib.metrics import score_titles
from tasks.lib.metrics import warn_if_collapsed
from tasks.lib.rundir import RunDirectory
from tasks.lib.rundir import atomic_write_json
from tasks.lib.rundir import atomic_write_text
from tasks.lib.runs import default_run_dir
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
    parser = ArgumentParser(
        description=description,
        formatter_class=HelpFormatter,
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
        help="strategy option, e.g. token_rate=0.3 or epsilon=1 (repeat "
        "for more; a wrong key lists the strategy's options)",
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
    group.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="share of --data held out for validation",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of --data held out for the test",
    )
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
    group.add_argument(
        "--batch-size", type=int, default=16, help="training pairs per step"
    )
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
        help=f"epochs to train; default "
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
    group.add_argument(
        "--min-length",
        type=int,
        default=1,
        metavar="N",
        help="bert4keras's minlen: an end token is honoured only from the "
        "N-th generated token on",
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
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of initialisation, batch order, data split and sampling",
    )
    group.add_argument(
        "--out",
        help="run directory (default runs/<task>-<strategy>-seed<seed>)",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bars (one line per epoch)",
    )
    add_device_options(parser)
    return parser


def add_device_options(parser):
    """--precision, --allow-cpu, --verbose: shared by the training scripts."""
    group = parser.add_argument_group("device")
    group.add_argument(
        "--precision",
        choices=sorted(POLICIES),
        help="compute precision; default bf16 on a GPU that supports it "
        "(compute capability 8.0+), else fp32",
    )
    group.add_argument(
        "--allow-cpu",
        action="store_true",
        help="train on the CPU even though nvidia-smi lists a GPU that the "
        "backend does not see (a CPU build; see README, On a GPU)",
    )
    add_verbose(group)


def parse_strategy_options(items, flag="--strategy-option"):
    """`['token_rate=0.3']` -> `{'token_rate': 0.3}` (numbers parsed)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{flag} {item!r}: expected KEY=VALUE")
        options[key] = _parse_value(value)
    return options


def _parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_strategy(name, items, flag="--strategy-option"):
    """The strategy `name` with its `KEY=VALUE` options, checked: an
    unknown key lists the valid ones with their types and defaults, a
    value of the wrong type or range names the option."""
    from models.strategies import STRATEGIES

    if name not in STRATEGIES:
        fail(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    options = parse_strategy_options(items, flag)
    for key, value in options.items():
        if key not in fields:
            fail(
                f"{flag} {key}: {name} has no option {key!r}; "
                f"valid: {describe_options(cls) or 'none'}"
            )
        options[key] = _coerce(flag, key, value, fields[key].type)
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        given = ", ".join(f"{k}={v}" for k, v in options.items())
        fail(f"{flag} {given}: {error}")


def describe_options(cls):
    """'token_rate (float, default 0.3), ...' of a strategy class."""
    return ", ".join(
        f"{f.name} ({_type_name(f.type)}, default {f.default!r})"
        for f in dataclasses.fields(cls)
        if f.init
    )


def _type_name(kind):
    return getattr(kind, "__name__", None) or str(kind)


def _coerce(flag, key, value, kind):
    """A parsed option value as its field's type (int -> float is fine)."""
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is str and not isinstance(value, str):
        return str(value)
    if kind in (int, float) and not isinstance(value, kind):
        fail(f"{flag} {key}={value}: expected {kind.__name__}")
    return value


def strategy_options(strategy):
    """Every option of a strategy object, defaults included (JSON-ready)."""
    return {
        f.name: _jsonable(getattr(strategy, f.name))
        for f in dataclasses.fields(strategy)
        if f.init
    }


def given_options(strategy, args):
    """The options the command line set, as the strategy holds them."""
    every = strategy_options(strategy)
    given = parse_strategy_options(args.strategy_option)
    return {key: every[key] for key in given}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


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
            fail(f"--model-dir {directory}: not a directory")
        from models.bert import find_config_file

        try:
            files.config = files.config or str(find_config_file(directory))
        except FileNotFoundError as error:
            fail(f"--model-dir {directory}: {error}")
        files.vocab = files.vocab or str(directory / "vocab.txt")
        files.checkpoint = files.checkpoint or str(directory)
    if files.checkpoint and not files.config:
        fail("--checkpoint needs --config (or use --model-dir)")
    for flag, path in (("--config", files.config), ("--vocab", files.vocab)):
        if path and not pathlib.Path(path).is_file():
            fail(f"{flag} {path}: no such file")
    if files.checkpoint:
        from weights.formats import check_file
        from weights.formats import resolve

        try:
            # The format from the name; a directory: its checkpoint file.
            files.checkpoint = str(resolve(files.checkpoint)[1])
            check_file(files.checkpoint)
        except (FileNotFoundError, ValueError) as error:
            fail(f"--checkpoint {files.checkpoint}: {error}")
    return files


def check_known_model(name, directory):
    """`--model NAME`: where to get it, or the sha256 of its local copy."""
    if not directory:
        # The answer to "where do I get it?": several lines, on purpose.
        raise SystemExit(
            f"error: --model {name}: give the directory holding its files "
            f"with --model-dir DIR. To get them:\n"
            + registry.download_instructions(name)
        )
    try:
        digests = registry.checksums(name, directory)
    except (FileNotFoundError, ValueError) as error:
        fail(f"--model {name}: {error}")
    for file, digest in digests.items():
        print(f"{name}: {file} sha256 {digest}")
    return digests


def is_tiny_default(args, files):
    return not (files.config or args.train or args.data)


def load_splits(args):
    """(train, valid, test) pairs, and what they are: per split its file,
    the file's sha256 and pair count, and the pairs used (after --limit,
    the split and --valid-limit)."""
    if args.data:
        pairs = _read(args.data, args)
        splits = split_pairs(
            pairs, args.valid_fraction, args.test_fraction, args.seed
        )
        files = [_file_info(args.data, len(pairs))] * 3
        split = {
            "seed": args.seed,
            "valid_fraction": args.valid_fraction,
            "test_fraction": args.test_fraction,
        }
    elif args.train:
        names = ("train", "valid", "test")
        splits = [_read(getattr(args, name), args) for name in names]
        files = [
            _file_info(getattr(args, name), len(pairs))
            for name, pairs in zip(names, splits)
        ]
        split = None
    else:
        pairs = synthetic.make_pairs(TINY["pairs"], seed=1234)
        splits = split_pairs(pairs, 0.1, 0.1, seed=0)
        synthetic_file = {
            "path": "synthetic (data/synthetic.py)",
            "pairs_in_file": len(pairs),
        }
        files = [synthetic_file] * 3
        split = {"seed": 0, "valid_fraction": 0.1, "test_fraction": 0.1}
    train, valid, test = splits
    if args.valid_limit:
        valid = valid[: args.valid_limit]
    info = {}
    for name, pairs, file in zip(SPLITS, (train, valid, test), files):
        if not pairs:
            fail(f"{file['path']}: no {name} pairs left ({_why_empty(args)})")
        info[name] = {**file, "pairs": len(pairs)}
    if split:
        info["split"] = split
    return (train, valid, test), info


SPLITS = ("train", "valid", "test")


def _why_empty(args):
    if args.data:
        return (
            f"--data split by --valid-fraction {args.valid_fraction} and "
            f"--test-fraction {args.test_fraction}; give more pairs or "
            "other fractions"
        )
    return "the file has no pairs"


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
    return {
        "path": str(path),
        "sha256": sha256_of(path),
        "pairs_in_file": count,
    }


def load_tokenizer(args, files, out):
    """Tokenizer and keep_tokens (None when the vocabulary is kept whole)."""
    vocab = files.vocab
    if vocab is None:
        if not is_tiny_default(args, files):
            fail("a vocabulary is needed: give --vocab or --model-dir")
        vocab = synthetic.write_vocab(out / "vocab.txt")
    if args.no_simplify:
        return Tokenizer(load_vocab(vocab), do_lower_case=True), None
    token_dict, keep_tokens = load_vocab(
        vocab, simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    return Tokenizer(token_dict, do_lower_case=True), keep_tokens


def load_config(args, files):
    """The model's `BertConfig` (its file, or the random model's flags),
    checked before anything is built: positive sizes, heads dividing the
    width, room for --maxlen positions."""
    from models.bert import BertConfig

    if not files.config:
        return None
    try:
        config = BertConfig.from_json(files.config)
    except (TypeError, ValueError, ZeroDivisionError) as error:
        fail(f"--config {files.config}: {_message(error)}")
    for name in SIZES:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            fail(
                f"{files.config}: {name} is {value!r}; expected a positive "
                "integer"
            )
    if args.maxlen > config.max_position_embeddings:
        fail(
            f"--maxlen {args.maxlen}: the model has "
            f"{config.max_position_embeddings} positions "
            f"(max_position_embeddings in {files.config}); expected "
            f"--maxlen <= {config.max_position_embeddings}"
        )
    return config


SIZES = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def _message(error, limit=600):
    """An error's message on one line, shortened past `limit` characters
    (a checkpoint's list of every mismatched variable can be long)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + " …"


def check_vocab_fits(files, config, tokenizer, keep_tokens):
    """The vocabulary must index rows of the embedding table: a larger
    vocab.txt than the checkpoint was trained with would fail (or read
    garbage) mid-run."""
    if config is None:
        return
    if files.checkpoint:
        from weights.formats import read_keep_tokens

        if read_keep_tokens(files.checkpoint) is not None:
            return  # rows already sliced: the loader checks the match
    rows = config.vocab_size
    largest = max(keep_tokens) if keep_tokens else tokenizer.vocab_size - 1
    if largest >= rows:
        fail(
            f"--vocab {files.vocab}: token id {largest} does not fit the "
            f"embedding table of {rows} rows (vocab_size in {files.config}); "
            "expected the vocab.txt the checkpoint was trained with"
        )


def build_model(args, files, keep_tokens, vocab_size, precision):
    from models import build_transformer_model

    dtype = POLICIES[precision]
    if files.config:
        try:
            return build_transformer_model(
                files.config,
                files.checkpoint,
                application="unilm",
                keep_tokens=keep_tokens,
                dtype=dtype,
            )
        except (OSError, ValueError) as error:
            fail(f"--checkpoint {files.checkpoint}: {_message(error)}")
    return build_transformer_model(
        None,
        application="unilm",
        dtype=dtype,
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(512, args.maxlen),
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
    )


def describe_model(files, model, keep_tokens=None):
    config = model.bert_config
    kept = " kept (keep_tokens)" if keep_tokens is not None else ""
    shape = (
        f"{config.num_hidden_layers} layers, {config.hidden_size} "
        f"hidden, {config.num_attention_heads} heads, vocab "
        f"{config.vocab_size}{kept}, {model.count_params():,} weights"
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
    if args.epochs is None:
        args.epochs = defaults["epochs"]
    if args.lr is None:
        args.lr = defaults["lr"]
    if args.warmup_steps is None:
        args.warmup_steps = defaults["warmup_steps"]


def check_options(args, files):
    """Every option's range and the combinations, in one pass before
    anything is read, built or written."""
    at_least = {
        "--epochs": (args.epochs, 1),
        "--batch-size": (args.batch_size, 1),
        "--eval-batch-size": (args.eval_batch_size, 1),
        "--title-maxlen": (args.title_maxlen, 1),
        "--warmup-steps": (args.warmup_steps, 0),
        "--length-multiple": (args.length_multiple, 1),
        "--seed": (args.seed, 0),
        "--limit": (args.limit, 1),
        "--valid-limit": (args.valid_limit, 1),
    }
    if not files.config:
        for name in ("layers", "hidden", "heads", "intermediate"):
            at_least[f"--{name}"] = (getattr(args, name), 1)
    check_at_least(at_least)
    for beam in args.beams:
        if beam < 1:
            fail(f"--beams {beam}: expected beam sizes of 1 or more")
    if not args.lr > 0:
        fail(f"--lr {args.lr}: expected a learning rate above 0")
    if not 0 <= args.dropout < 1:
        fail(f"--dropout {args.dropout}: expected 0 <= dropout < 1")
    if not 0 <= args.label_smoothing < 1:
        fail(f"--label-smoothing {args.label_smoothing}: expected 0 <= EPS < 1")
    if args.ema is not None and not 0 < args.ema < 1:
        fail(f"--ema {args.ema}: expected 0 < DECAY < 1")
    if args.min_length < 1:
        fail(f"--min-length {args.min_length}: expected 1 or more")
    # [CLS] + at least one source token + [SEP] + the title + [SEP].
    if args.maxlen < args.title_maxlen + 3:
        fail(
            f"--maxlen {args.maxlen} with --title-maxlen {args.title_maxlen}: "
            f"no room for a source; expected --maxlen of at least "
            f"{args.title_maxlen + 3} (--title-maxlen + 3)"
        )
    if not files.config and args.hidden % args.heads:
        fail(
            f"--hidden {args.hidden}: expected a multiple of --heads "
            f"{args.heads}"
        )
    check_data_options(args)


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
    for flag in ("--data", "--train", "--valid", "--test"):
        path = getattr(args, flag[2:])
        if path and not pathlib.Path(path).is_file():
            fail(f"{flag} {path}: no such file")


def run_options(args):
    """What besides the strategy shapes a run's numbers (results.json)."""
    return {
        "label_smoothing": args.label_smoothing,
        "ema": args.ema,
        "length_penalty": args.length_penalty,
        "min_length": args.min_length,
    }


def run(args, task):
    """The whole experiment; returns the results dict.

    Everything a user can get wrong is checked first, in this order, before
    the run directory is touched: options, strategy options, model files,
    data, the run directory's earlier settings, the device; then the model
    is built (reading the checkpoint). Only then is anything written.
    """
    from models.distribution import data_parallel
    from models.distribution import global_batch_check

    files = resolve_model_files(args)
    tiny = is_tiny_default(args, files)
    fill_training_defaults(args, files)
    check_options(args, files)
    strategy = make_strategy(args.strategy, args.strategy_option)
    config = load_config(args, files)
    splits, data_info = load_splits(args)
    out = RunDirectory(run_dir(args, task), create=False)
    settings = {**vars(args), "task": task}
    out.refuse_other_settings(settings)
    environment = describe_environment(args.precision)
    check_gpu_build(environment, args.allow_cpu)
    precision = environment["precision"]
    if tiny:
        print(
            "No model or data given: running the built-in tiny default "
            "(a small random BERT on synthetic pairs; see --help for "
            "real checkpoints and data)."
        )
    if args.compilation_cache:
        from models.backend import enable_compilation_cache

        if not enable_compilation_cache(args.compilation_cache):
            print("--compilation-cache: only the JAX backend has one")
    with data_parallel(args.data_parallel):
        global_batch_check(args.batch_size)
        if files.vocab:
            tokenizer, keep_tokens = load_tokenizer(args, files, None)
            check_vocab_fits(files, config, tokenizer, keep_tokens)
            model = build_run_model(
                args, files, keep_tokens, tokenizer, precision
            )
            out.create()
        else:
            out.create()
            tokenizer, keep_tokens = load_tokenizer(args, files, out.path)
            model = build_run_model(
                args, files, keep_tokens, tokenizer, precision
            )
        out.record_settings(settings)
        trainer = build_trainer(model, strategy, args, precision)
        facts = {
            "task": task,
            "environment": environment,
            "model": describe_model(files, model, keep_tokens),
            "model_sha256": files.sha256,
            "data": data_info,
            "strategy": args.strategy,
            "strategy_options": strategy_options(strategy),
            # What the command line set: comparison rows are labelled by it.
            "strategy_options_given": given_options(strategy, args),
            "options": run_options(args),
        }
        print_start(facts, out)
        summary = train_and_test(
            args, out, model, trainer, tokenizer, splits, facts
        )
    print_results(summary, out)
    print_examples(out / f"predictions-beam{min(args.beams)}.tsv")
    return summary


def run_dir(args, task):
    return args.out or default_run_dir(task, args.strategy, args.seed)


def build_run_model(args, files, keep_tokens, tokenizer, precision):
    import keras

    keras.utils.set_random_seed(args.seed)
    return build_model(
        args, files, keep_tokens, tokenizer.vocab_size, precision
    )


def print_start(facts, out):
    """What this run is, before it trains: device, model, data, strategy
    (every option, defaults included) and where it writes."""
    data = facts["data"]
    print(f"Device:   {summary_line(facts['environment'])}")
    print(f"Model:    {facts['model']}")
    paths = {data[name]["path"] for name in SPLITS}
    source = " + ".join(data[name]["path"] for name in SPLITS)
    source = paths.pop() if len(paths) == 1 else source
    counts = ", ".join(f"{name} {data[name]['pairs']}" for name in SPLITS)
    split = data.get("split")
    how = (
        f"split by seed {split['seed']} (valid {split['valid_fraction']}, "
        f"test {split['test_fraction']})"
        if split
        else "one file per split"
    )
    print(f"Data:     {source}: {counts} pairs; {how}")
    options = ", ".join(
        f"{k}={v}" for k, v in facts["strategy_options"].items()
    )
    print(
        f"Strategy: {facts['strategy']}" + (f" ({options})" if options else "")
    )
    print(f"Run dir:  {out.path}")


def build_trainer(model, strategy, args, precision="fp32"):
    import keras

    from models.trainer import Seq2SeqTrainer

    trainer = Seq2SeqTrainer(
        model, strategy, seed=args.seed, label_smoothing=args.label_smoothing
    )
    optimizer = keras.optimizers.Adam(
        learning_rate(args),
        use_ema=args.ema is not None,
        ema_momentum=args.ema or 0.99,
    )
    if precision == "fp16":
        # float16 gradients underflow without loss scaling.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    trainer.compile(optimizer=optimizer)
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


def train_and_test(args, out, model, trainer, tokenizer, splits, facts):
    """Train epoch by epoch (resuming), then score the best weights;
    `facts` (what `print_start` shows) go into results.json as they are."""
    from models.decoding import Seq2SeqDecoder
    from models.distribution import DivisibleBatches

    train, valid, test = splits
    decoder = Seq2SeqDecoder(
        model,
        end_id=tokenizer._token_end_id,
        maxlen=args.title_maxlen,
        minlen=args.min_length,
        length_penalty=args.length_penalty,
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
    for epoch in range(state["epochs_done"], args.epochs):
        figures = train_one_epoch(trainer, batches, epoch, args)
        # With --ema the averaged weights are scored and kept as the best;
        # the checkpoint holds the training weights and the averages.
        with trainer.averaged_weights():
            metrics, _ = evaluate(
                decoder, tokenizer, valid, 1, args, f"valid epoch {epoch + 1}"
            )
            record_epoch(model, out, state, metrics, figures)
        state["epochs_done"] += 1
        out.save_checkpoint(trainer, state, f"epoch-{state['epochs_done']}")
    if state["best"]:
        model.load_weights(str(out / "best.weights.h5"))
    results = score_test(decoder, tokenizer, test, args, out)
    summary = {
        **facts,
        "seed": args.seed,
        "commit": facts["environment"]["commit"],
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
    history = trainer.fit(
        fit_input(batches),
        epochs=epoch + 1,
        initial_epoch=epoch,
        # The batches come in the order set above.
        shuffle=False,
        verbose=1 if args.progress else 2,
        callbacks=[RunProgress(args.epochs)],
    )
    return {k: float(v[-1]) for k, v in history.history.items()}


class RunProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, its epoch header counting the run's epochs:
    `fit` runs one epoch per call (validation decodes between epochs), so
    Keras's own header would read 'Epoch k/k'."""

    def __init__(self, epochs):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.verbose and self.epochs == 1:
            print("Epoch 1/1")


def record_epoch(model, out, state, metrics, figures):
    """Append the epoch's scores and keep the model's weights if best."""
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
    """Parse, run; bad input ends in one line on stderr (exit status 2)
    before anything is trained or written."""
    args = build_parser(description, defaults).parse_args(argv)
    run_main(run, args, task, prog=f"{task}.py")
    return 0
