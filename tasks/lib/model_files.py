"""The model of a seq2seq run: which files hold it (`--model-dir` or the
single flags, a known checkpoint's digests), its config, its tokenizer,
and the model built from them, each checked before anything is written.

A run without a config trains a randomly initialised model shaped by the
flags (`factory.shape_config`).
"""

import dataclasses
import json
import pathlib

from data import Tokenizer
from data import load_vocab
from data import synthetic
from data.vocab import SEQ2SEQ_TOKENS
from models import build_transformer_model
from models.config import BertConfig
from models.config import find_config_file
from models.t5 import MODEL_TYPES as T5_MODEL_TYPES
from tasks.lib.atomic import scratch_folder
from tasks.lib.atomic import writes_enabled
from tasks.lib.cli import check_files
from tasks.lib.cli import fail
from tasks.lib.environment import POLICIES
from tasks.lib.factory import SIZES
from tasks.lib.factory import flags_config
from tasks.lib.splits import is_tiny_default
from weights import registry
from weights.formats import check_file
from weights.formats import read_keep_tokens
from weights.formats import read_names
from weights.formats import resolve
from weights.t5_mapping import resolve_t5_file


@dataclasses.dataclass
class ModelFiles:
    config: str | None
    checkpoint: str | None
    vocab: str | None
    sha256: dict[str, str] | None = None  # of a known checkpoint's files
    encoder_decoder: bool = False  # a T5 / mT5 config


def resolve_model_files(args) -> ModelFiles:
    """Config, checkpoint and vocab from --model-dir or the single flags."""
    files = ModelFiles(args.config, args.checkpoint, args.vocab)
    if args.model:
        files.sha256 = check_known_model(args.model, args.model_dir)
    if args.model_dir:
        directory = pathlib.Path(args.model_dir)
        if not directory.is_dir():
            fail(f"--model-dir {directory}: not a directory")
        try:
            files.config = files.config or str(find_config_file(directory))
        except FileNotFoundError as error:
            fail(f"--model-dir {directory}: {error}")
        files.encoder_decoder = is_encoder_decoder(files.config)
        # mT5's vocabulary is its SentencePiece model.
        vocab = "spiece.model" if files.encoder_decoder else "vocab.txt"
        if not files.vocab and not (directory / vocab).is_file():
            fail(
                f"--model-dir {directory}: no {vocab} in it (the model's "
                "vocabulary); put it there or give --vocab"
            )
        files.vocab = files.vocab or str(directory / vocab)
        files.checkpoint = files.checkpoint or str(directory)
    elif files.config:
        files.encoder_decoder = is_encoder_decoder(files.config)
    if files.checkpoint and not files.config:
        fail("--checkpoint needs --config (or use --model-dir)")
    check_files({"--config": files.config, "--vocab": files.vocab})
    if files.checkpoint:
        try:
            # The format from the name; a directory: its checkpoint file.
            files.checkpoint = str(resolve_checkpoint(files))
        except (FileNotFoundError, ValueError) as error:
            fail(f"--checkpoint {files.checkpoint}: {error}")
    return files


def resolve_checkpoint(files: ModelFiles):
    """The checkpoint file (or TF prefix) of a file or directory,
    checked as far as its format allows before it is read."""
    if files.encoder_decoder:
        return resolve_t5_file(files.checkpoint)[1]
    path = resolve(files.checkpoint)[1]
    check_file(str(path))
    return path


def is_encoder_decoder(config_path) -> bool:
    """Whether a config is a T5 / mT5 encoder-decoder's (Hugging Face's
    `model_type`); a config that does not read is left to the loader,
    which reports it in its own words."""
    try:
        values = json.loads(pathlib.Path(config_path).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    model_type = values.get("model_type") if isinstance(values, dict) else None
    return model_type in T5_MODEL_TYPES


def check_known_model(name: str, directory) -> dict[str, str]:
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


def load_config(args, files: ModelFiles) -> BertConfig | None:
    """The config of the model's file, checked before anything is built:
    positive sizes, room for --maxlen positions. None for a random model,
    whose shape flags are checked here too (the config itself waits for
    the tokenizer's vocabulary size: `build_model`)."""
    if not files.config:
        random_config(args, vocab_size=1)
        return None
    try:
        config = BertConfig.from_json(files.config)
        config.model_type = model_type_of(files)
    except (TypeError, ValueError, ZeroDivisionError) as error:
        fail(f"--config {files.config}: {short_message(error)}")
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


def model_type_of(files: ModelFiles) -> str:
    """The family of a model's files. Hugging Face's `config.json` names
    it (`model_type`); a bert4keras-style `bert_config.json` does not:
    NEZHA's has `max_relative_position`, and bojone's RoFormer checkpoints
    are BERT's names without position embeddings, so a BERT config over
    such a checkpoint is a RoFormer."""
    values = json.loads(pathlib.Path(files.config).read_text("utf-8"))
    if "model_type" in values:
        return BertConfig.from_dict(values).model_type
    if "max_relative_position" in values:
        return "nezha"
    if not files.checkpoint:
        return "bert"
    names = read_names(files.checkpoint)
    position = "bert/embeddings/position_embeddings"
    if "bert/embeddings/word_embeddings" in names and position not in names:
        return "roformer"
    return "bert"


def random_config(args, vocab_size: int) -> BertConfig:
    """The randomly initialised model of the shape flags and --dropout."""
    return flags_config(args, vocab_size, max(512, args.maxlen), args.dropout)


def short_message(error, limit=600):
    """An error's message on one line, shortened past `limit` characters
    (a checkpoint's list of every mismatched variable can be long)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + " …"


def load_tokenizer(args, files: ModelFiles, out):
    """Tokenizer and keep_tokens (None when the vocabulary is kept whole);
    the built-in default writes its vocabulary into the folder `out`."""
    vocab = files.vocab
    if vocab is None:
        if not is_tiny_default(args, files):
            fail("a vocabulary is needed: give --vocab or --model-dir")
        # Processes of a run but the first write their own copy.
        folder = out if writes_enabled() else scratch_folder()
        vocab = synthetic.write_vocab(folder / "vocab.txt")
    if args.no_simplify:
        return Tokenizer(load_vocab(vocab), do_lower_case=True), None
    token_dict, keep_tokens = load_vocab(
        vocab, simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    return Tokenizer(token_dict, do_lower_case=True), keep_tokens


def check_vocab_fits(files: ModelFiles, config, tokenizer, keep_tokens):
    """The vocabulary must index rows of the embedding table: a larger
    vocab.txt than the checkpoint was trained with would fail (or read
    garbage) mid-run."""
    if config is None:
        return
    if files.checkpoint and read_keep_tokens(files.checkpoint) is not None:
        return  # rows already sliced: the loader checks the match
    rows = config.vocab_size
    largest = max(keep_tokens) if keep_tokens else tokenizer.vocab_size - 1
    if largest >= rows:
        fail(
            f"--vocab {files.vocab}: token id {largest} does not fit the "
            f"embedding table of {rows} rows (vocab_size in {files.config}); "
            "expected the vocab.txt the checkpoint was trained with"
        )


def build_model(args, files: ModelFiles, keep_tokens, vocab_size, precision):
    """The UniLM model of the files (the checkpoint loaded), or a random
    one of the shape flags, computing in `precision`."""
    dtype = POLICIES[precision]
    if not files.config:
        config = random_config(args, vocab_size)
        return build_transformer_model(config, application="unilm", dtype=dtype)
    try:
        return build_transformer_model(
            files.config,
            files.checkpoint,
            model=model_type_of(files),
            application="unilm",
            keep_tokens=keep_tokens,
            dtype=dtype,
        )
    except (OSError, ValueError) as error:
        fail(f"--checkpoint {files.checkpoint}: {short_message(error)}")


def describe_model(files: ModelFiles, model, keep_tokens=None) -> str:
    """The model in one line: its checkpoint (or random init) and shape."""
    config = model.bert_config
    kept = " kept (keep_tokens)" if keep_tokens is not None else ""
    family = "" if config.model_type == "bert" else f"{config.model_type}, "
    shape = (
        f"{family}{config.num_hidden_layers} layers, {config.hidden_size} "
        f"hidden, {config.num_attention_heads} heads, vocab "
        f"{config.vocab_size}{kept}, {model.count_params():,} weights"
    )
    if files.checkpoint:
        return f"{files.checkpoint} ({shape})"
    return f"random init ({shape})"
