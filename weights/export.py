"""Hand a trained model to Hugging Face transformers.

    python -m weights.export runs/csl_title-baseline-seed0 exported/
    python -m weights.export chinese_wwm_L-12_H-768_A-12 exported/
    python -m weights.export model.keras exported/ --vocab vocab.txt

writes OUT/config.json (transformers' BertConfig of a BertForMaskedLM),
OUT/model.safetensors (BertForMaskedLM's names) and OUT/vocab.txt (the
model's vocabulary in row order: the kept tokens, in order, when the model
was built with keep_tokens), so that `BertForMaskedLM.from_pretrained(OUT)`
and `BertTokenizer.from_pretrained(OUT)` load it. The export is the
network only: for UniLM's seq2seq attention give BertForMaskedLM the mask
as a 4-D `attention_mask` (README, "Hugging Face export").

SOURCE is one of:
- a run directory of tasks/csl_title.py or tasks/lcsts_summary.py: its
  best.weights.h5, and the model's config and vocabulary that the run keeps
  (model.json, model-vocab.txt). Runs made before they were kept are read
  through their config.json of settings instead, which names the
  config file or model directory the run started from; a run of a random
  model takes its shape from the weights and its heads from the settings.
  The vocabulary is the run's (its --vocab, its model directory's, or the
  vocab.txt in the run directory), kept as the run kept it (unless the run
  had --no-simplify);
- a model directory: config.json or bert_config.json, vocab.txt and a
  checkpoint `weights` reads (Google TF, Hugging Face, ours, Keras
  .weights.h5), such as pretrain.py writes;
- a `.keras` file saved from a model of `build_transformer_model`, with
  the vocab.txt beside it or given by --vocab.

Every source is read as Google-named arrays and plain JSON: no Keras model
is built, so this sits in `weights/` (below `models/`, importing
`data.vocab` alone) and needs TensorFlow only to read a TF checkpoint.
"""

import argparse
import dataclasses
import io
import json
import os
import pathlib
import re
import sys
import zipfile

import numpy as np

from data.vocab import SEQ2SEQ_TOKENS
from data.vocab import load_vocab
from weights import formats
from weights import mapping

RUN_WEIGHTS = "best.weights.h5"
# What a run keeps of its model beside its weights (tasks/lib/trained_model.py
# writes them): its config and its vocabulary in row order.
RUN_MODEL_CONFIG = "model.json"
RUN_MODEL_VOCAB = "model-vocab.txt"
CONFIG_FILES = ("config.json", "bert_config.json")
MLM_HEAD = "cls/predictions/transform/dense/kernel"
# BERT's values, for what a source leaves unsaid (also `BertConfig`'s).
DEFAULTS = {
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
}
# Read from a config file; the sizes come from the arrays themselves.
CONFIG_FIELDS = ("num_attention_heads", *DEFAULTS)


class ExportError(ValueError):
    """A source that cannot be exported; the message says why."""


@dataclasses.dataclass
class Source:
    """What a source holds: Google-named arrays, the config fields the
    arrays do not tell, and the vocabulary, one token per embedding row."""

    arrays: dict[str, np.ndarray]
    config: dict
    tokens: list[str]


# Sources ------------------------------------------------------------------


def read_source(source, vocab=None) -> Source:
    """A run directory, a model directory or a `.keras` file; `vocab`
    overrides the vocab.txt the source names."""
    source = pathlib.Path(source)
    if source.is_file() and source.suffix == ".keras":
        return read_keras_file(source, vocab)
    if not source.is_dir():
        raise ExportError(f"{source}: not a directory or a .keras file")
    if (source / RUN_WEIGHTS).is_file():
        return read_run(source, vocab)
    if not any((source / name).is_file() for name in CONFIG_FILES):
        raise ExportError(
            f"{source}: no {RUN_WEIGHTS} (not a finished run) and no "
            f"{' or '.join(CONFIG_FILES)} (not a model directory)"
        )
    return read_model_dir(source, vocab)


def read_run(directory, vocab=None) -> Source:
    """A run directory: the model's config and vocabulary it keeps, or
    (runs made before it kept them) its settings say where the model came
    from."""
    if (directory / RUN_MODEL_CONFIG).is_file():
        return Source(
            read_arrays(directory / RUN_WEIGHTS),
            pick(read_json(directory / RUN_MODEL_CONFIG)),
            ordered(load_vocab(str(vocab or directory / RUN_MODEL_VOCAB))),
        )
    settings = read_json(directory / "config.json")
    missing = {"heads", "vocab", "config", "model_dir"} - set(settings)
    if missing:
        raise ExportError(
            f"{directory / 'config.json'}: no {', '.join(sorted(missing))}: "
            "not the settings of a csl_title.py or lcsts_summary.py run"
        )
    model_dir = settings["model_dir"]
    if model_dir and not pathlib.Path(model_dir).is_dir():
        raise ExportError(
            f"model_dir {model_dir}: not a directory (relative paths are "
            "read from the current directory)"
        )
    vocab = vocab or settings["vocab"]
    if vocab is None:
        vocab = pathlib.Path(model_dir or directory) / "vocab.txt"
    return Source(
        read_arrays(directory / RUN_WEIGHTS),
        run_config(settings),
        run_tokens(setting_path(vocab, "vocab"), settings),
    )


def run_config(settings) -> dict:
    """The config file the run started from, or its random model's flags
    (the sizes are read from the weights)."""
    model_dir = settings["model_dir"]
    config_file = settings["config"] or (
        model_dir and find_config(pathlib.Path(model_dir))
    )
    if config_file:
        return pick(read_json(setting_path(config_file, "config")))
    dropout = settings.get("dropout", 0.0)
    return {
        "num_attention_heads": settings["heads"],
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
    }


def run_tokens(vocab, settings) -> list[str]:
    """The run's vocabulary, kept as the run kept it."""
    if settings.get("no_simplify"):
        return ordered(load_vocab(str(vocab)))
    token_dict, _ = load_vocab(
        str(vocab), simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    return ordered(token_dict)


def read_model_dir(directory, vocab=None) -> Source:
    """Config, vocab.txt and a checkpoint; our safetensors may hold
    keep_tokens, which pick the vocabulary's rows."""
    config = pick(read_json(find_config(directory)))
    arrays = read_arrays(directory)
    tokens = ordered(load_vocab(str(vocab or directory / "vocab.txt")))
    keep = formats.read_keep_tokens(directory)
    return Source(arrays, config, kept(tokens, keep))


def read_keras_file(path, vocab=None) -> Source:
    """A `.keras` archive of a `BertModel`: its config and weights."""
    with zipfile.ZipFile(path) as archive:
        saved = json.loads(archive.read("config.json"))
        weights = io.BytesIO(archive.read("model.weights.h5"))
    if saved.get("class_name") != "BertModel":
        raise ExportError(
            f"{path}: holds a {saved.get('class_name')}, not a BertModel "
            "(a model of build_transformer_model)"
        )
    inner = saved["config"]
    arrays = formats.read_keras_weights(weights)
    vocab = vocab or path.with_name("vocab.txt")
    if not pathlib.Path(vocab).is_file():
        raise ExportError(f"{path}: no vocab.txt beside it: give --vocab")
    tokens = ordered(load_vocab(str(vocab)))
    return Source(
        arrays, pick(inner["bert_config"]), kept(tokens, inner["keep_tokens"])
    )


def read_arrays(path) -> dict[str, np.ndarray]:
    """Google-named arrays of any checkpoint, Keras weights files too."""
    kind, file = formats.resolve(path)
    if kind == "keras":
        return formats.read_keras_weights(file)
    return formats.read_checkpoint(file)


def find_config(directory) -> pathlib.Path:
    for name in CONFIG_FILES:
        if (directory / name).is_file():
            return directory / name
    raise ExportError(f"{directory}: no {' or '.join(CONFIG_FILES)}")


def setting_path(value, name) -> pathlib.Path:
    path = pathlib.Path(value)
    if not path.is_file():
        raise ExportError(
            f"{name} {value}: no such file (relative paths are read from "
            "the current directory; give --vocab for the vocabulary)"
        )
    return path


def read_json(path) -> dict:
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}: not valid JSON ({error.msg})") from None


def pick(config) -> dict:
    """The config fields an export keeps; a family transformers' BERT
    cannot hold (RoFormer, NEZHA: no position embeddings) is refused."""
    family = config.get("model_type", "bert")
    if family not in ("bert", "roberta"):
        raise ExportError(
            f"a {family} model: only BERT-family models export (to "
            "transformers' BertForMaskedLM)"
        )
    return {key: config[key] for key in CONFIG_FIELDS if key in config}


def ordered(token_dict) -> list[str]:
    return sorted(token_dict, key=token_dict.get)


def kept(tokens, keep_tokens) -> list[str]:
    return tokens if keep_tokens is None else [tokens[i] for i in keep_tokens]


# Hugging Face -------------------------------------------------------------


def hf_config(model: Source) -> dict:
    """transformers' BertConfig: sizes from the arrays, the rest given."""
    arrays = model.arrays
    missing = [
        name
        for name in (
            "bert/embeddings/word_embeddings",
            "bert/embeddings/position_embeddings",
            "bert/embeddings/token_type_embeddings",
            "bert/encoder/layer_0/intermediate/dense/kernel",
            MLM_HEAD,
        )
        if name not in arrays
    ]
    if missing:
        raise ExportError(
            f"no {', '.join(missing)}: BertForMaskedLM needs the encoder "
            "and the MLM head (a model built with application='unilm' or "
            "with_mlm)"
        )
    vocab_size, hidden = arrays["bert/embeddings/word_embeddings"].shape
    blocks = {
        match.group(1)
        for match in map(re.compile(r"bert/encoder/layer_(\d+)/").match, arrays)
        if match
    }
    config = {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        **DEFAULTS,
        **model.config,
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden),
        "num_hidden_layers": len(blocks),
        "intermediate_size": int(
            arrays["bert/encoder/layer_0/intermediate/dense/kernel"].shape[1]
        ),
        "max_position_embeddings": int(
            arrays["bert/embeddings/position_embeddings"].shape[0]
        ),
        "type_vocab_size": int(
            arrays["bert/embeddings/token_type_embeddings"].shape[0]
        ),
        "pad_token_id": 0,
    }
    heads = config.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1 or hidden % heads:
        raise ExportError(
            f"num_attention_heads {heads!r} does not divide hidden_size "
            f"{hidden}"
        )
    return config


def hf_arrays(arrays) -> tuple[dict[str, np.ndarray], list[str]]:
    """BertForMaskedLM's tensors, and the Google names it has no place for
    (the pooler, the next-sentence head)."""
    renamed, left_out = {}, []
    for name, array in arrays.items():
        hf_name = mapping.google_to_hf(name)
        if hf_name is None:
            left_out.append(name)
            continue
        if mapping.hf_is_transposed(name):
            array = array.T
        renamed[hf_name] = np.ascontiguousarray(array, dtype="float32")
    if "cls.predictions.bias" not in renamed:  # optional (weights.mapping)
        rows = arrays["bert/embeddings/word_embeddings"].shape[0]
        renamed["cls.predictions.bias"] = np.zeros(rows, "float32")
    return renamed, sorted(left_out)


def write_hf(model: Source, output) -> list[str]:
    """Write the three files into `output`; returns the names left out."""
    from safetensors.numpy import save_file

    config = hf_config(model)
    if len(model.tokens) != config["vocab_size"]:
        raise ExportError(
            f"the vocabulary has {len(model.tokens)} tokens for "
            f"{config['vocab_size']} embedding rows (another vocab.txt?)"
        )
    arrays, left_out = hf_arrays(model.arrays)
    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(output / "model.safetensors"), {"format": "pt"})
    text = json.dumps(config, indent=2, sort_keys=True)
    (output / "config.json").write_text(text + "\n", encoding="utf-8")
    (output / "vocab.txt").write_text(
        "".join(token + "\n" for token in model.tokens), encoding="utf-8"
    )
    return left_out


def export(source, output, vocab=None) -> list[str]:
    """`python -m weights.export` as a function; returns what it left out."""
    check_output(pathlib.Path(output))
    return write_hf(read_source(source, vocab), output)


def check_output(output):
    """A new or empty directory: the export never overwrites a model."""
    if output.is_file() or (output.is_dir() and any(output.iterdir())):
        raise ExportError(f"{output}: exists and is not an empty directory")


# Command line --------------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    """Argument errors in one line, pointing at --help."""

    def error(self, message):
        self.exit(2, f"export: error: {message} (see --help)\n")


class HelpFormatter(
    argparse.RawDescriptionHelpFormatter,
    argparse.ArgumentDefaultsHelpFormatter,
):
    """Keep the usage examples' layout and show defaults."""


def parse_args(argv=None):
    parser = ArgumentParser(
        prog="python -m weights.export",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "source", help="a run directory, a model directory or a .keras file"
    )
    parser.add_argument("output", help="the directory to write (new or empty)")
    parser.add_argument(
        "--vocab",
        default=None,
        help="vocab.txt to use instead of the one the source names",
    )
    return parser.parse_args(argv)


# What a bad source raises: ours, the readers' (ValueError, CheckpointError
# among them), missing or unreadable files, a `.keras` file that is not
# one, TensorFlow missing for a TF checkpoint.
ERRORS = (ValueError, KeyError, OSError, zipfile.BadZipFile, ImportError)


def main(argv=None) -> None:
    args = parse_args(argv)
    # TensorFlow, if a TF checkpoint needs it, starts without its C++ logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        left_out = export(args.source, args.output, args.vocab)
    except ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"export: error: {message}\n")
        sys.exit(2)
    if left_out:
        print(f"left out (no place in BertForMaskedLM): {', '.join(left_out)}")
    print(
        f"wrote {args.output}: config.json, model.safetensors, vocab.txt "
        "(load with transformers.BertForMaskedLM.from_pretrained)"
    )


if __name__ == "__main__":
    main()
