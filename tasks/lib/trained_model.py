"""A finished run's model for decoding: built from the run directory alone.

A run keeps what it takes to rebuild its model beside `best.weights.h5`:
`model.json` (the model's `BertConfig`, its vocabulary size that of the
kept tokens) and `model-vocab.txt` (the model's vocabulary in row order,
after `keep_tokens`; a T5 / mT5 run's SentencePiece model beside it,
`model-spiece.model`). With them, titling new text, diagnosing or exporting
a run needs neither the checkpoint it started from nor its data. Runs made
before these files existed are rebuilt from the model files their settings
name.
"""

import argparse
import dataclasses
import json

from data import SpTokenizer
from data import Tokenizer
from data import load_vocab
from models import build_transformer_model
from models.config import BertConfig
from models.t5 import build_t5_model
from tasks.lib.atomic import atomic_write_text
from tasks.lib.atomic import replacing
from tasks.lib.environment import POLICIES
from tasks.lib.model_files import build_model
from tasks.lib.model_files import load_tokenizer
from tasks.lib.model_files import resolve_model_files
from tasks.lib.runs import Run
from tasks.lib.splits import is_tiny_default

MODEL_CONFIG = "model.json"
MODEL_VOCAB = "model-vocab.txt"
MODEL_SPIECE = "model-spiece.model"
BEST_WEIGHTS = "best.weights.h5"


def save_architecture(directory, model, tokenizer: Tokenizer) -> None:
    """Write `model.json` and `model-vocab.txt` into a run directory (and
    `model-spiece.model`, an encoder-decoder's SentencePiece model)."""
    config = getattr(model, "t5_config", None) or model.bert_config
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True)
    atomic_write_text(directory / MODEL_CONFIG, text + "\n")
    tokens = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    atomic_write_text(
        directory / MODEL_VOCAB, "".join(f"{token}\n" for token in tokens)
    )
    sp_model = getattr(tokenizer, "sp_model", None)
    if sp_model is not None:
        with replacing(directory / MODEL_SPIECE) as temporary:
            temporary.write_bytes(sp_model.serialized_model_proto())


def load_trained(run: Run, args: argparse.Namespace):
    """(model with the run's best weights, its tokenizer), computing in
    the precision the run trained and decoded in (older runs: fp32)."""
    environment = run.results.get("environment") or {}
    precision = environment.get("precision", "fp32")
    directory = run.directory
    if (directory / MODEL_SPIECE).is_file():
        model, tokenizer = _encoder_decoder(directory, precision)
    elif (directory / MODEL_CONFIG).is_file():
        config = BertConfig.from_json(directory / MODEL_CONFIG)
        model = build_transformer_model(
            config, application="unilm", dtype=POLICIES[precision]
        )
        vocab = load_vocab(str(directory / MODEL_VOCAB))
        tokenizer = Tokenizer(vocab, do_lower_case=True)
    else:
        model, tokenizer = _from_model_files(run, args, precision)
    model.load_weights(str(directory / BEST_WEIGHTS))
    return model, tokenizer


def _encoder_decoder(directory, precision):
    """A T5 / mT5 run's model and SentencePiece tokenizer (as trained:
    no start token, `</s>` ending every text)."""
    model = build_t5_model(directory / MODEL_CONFIG, dtype=POLICIES[precision])
    tokenizer = SpTokenizer(
        directory / MODEL_SPIECE, token_start=None, token_end="</s>"
    )
    return model, tokenizer


def _from_model_files(run, args, precision):
    """A run without `model.json`: the config and vocabulary its settings
    name (the architecture only: the trained weights replace the
    checkpoint's)."""
    directory = run.directory
    files = resolve_model_files(args)
    if files.vocab is None:
        if not is_tiny_default(args, files):
            raise ValueError(f"{directory}: the run names no vocabulary")
        files.vocab = str(directory / "vocab.txt")
        if not (directory / "vocab.txt").is_file():
            raise FileNotFoundError(f"{files.vocab}: missing")
    tokenizer, keep_tokens = load_tokenizer(args, files, directory)
    files = dataclasses.replace(files, checkpoint=None)
    model = build_model(
        args, files, keep_tokens, tokenizer.vocab_size, precision
    )
    return model, tokenizer
