"""Convert a BERT checkpoint to Google-named safetensors.

Run this where TensorFlow is installed; the result loads anywhere, since
safetensors needs neither TensorFlow nor torch:

    python -m weights.convert chinese_L-12_H-768_A-12/bert_model.ckpt \\
        chinese_L-12_H-768_A-12/bert_model.safetensors

Any checkpoint `weights.read_checkpoint` reads is accepted (Google TF
checkpoint, Hugging Face safetensors or pytorch_model.bin). Optimizer state
is left out. With --keep-tokens-from the vocabulary rows are sliced as
`load_vocab(VOCAB, simplified=True, startswith=SEQ2SEQ_TOKENS)` does
([PAD], [UNK], [CLS], [SEP] first), and the kept ids are stored in the file.
"""

import argparse
import os
import pathlib
import sys

import numpy as np

from data.vocab import SEQ2SEQ_TOKENS
from data.vocab import load_vocab
from weights.formats import read_checkpoint
from weights.formats import write_safetensors
from weights.loader import apply_keep_tokens

PROG = "python -m weights.convert"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        # The usage example keeps its layout; no option has a default to
        # show.
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        help="TF checkpoint prefix (bert_model.ckpt), safetensors, "
        "pytorch_model.bin or a directory holding one",
    )
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument(
        "--keep-tokens-from",
        metavar="VOCAB",
        default=None,
        help="vocab.txt to simplify, keeping only its emittable tokens; "
        "none keeps the whole vocabulary",
    )
    return parser.parse_args(argv)


def check_args(args):
    """The output and vocabulary, before the checkpoint is read."""
    output = pathlib.Path(args.output)
    if output.suffix != ".safetensors":
        raise ValueError(
            f"output {output}: expected a file name ending in .safetensors"
        )
    if output.is_dir():
        raise ValueError(f"output {output}: is a directory; expected a file")
    if not output.parent.is_dir():
        raise ValueError(f"output {output}: no directory {output.parent}")
    source = pathlib.Path(args.checkpoint)
    if source.exists() and output.exists() and source.samefile(output):
        raise ValueError(f"output {output}: is the checkpoint itself")
    vocab = args.keep_tokens_from
    if vocab is not None and not pathlib.Path(vocab).is_file():
        raise FileNotFoundError(f"--keep-tokens-from {vocab}: no such file")


def main(argv=None) -> None:
    """Convert; a missing, unreadable or malformed input, or an output
    that cannot be written, ends in one line on stderr (exit status 2)."""
    args = parse_args(argv)
    # Before TensorFlow loads to read a TF checkpoint: no C++ info logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        convert(args)
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"{PROG}: error: {message}\n")
        sys.exit(2)


def convert(args):
    check_args(args)
    arrays = read_checkpoint(args.checkpoint)
    keep_tokens = None
    if args.keep_tokens_from:
        _, keep_tokens = load_vocab(
            args.keep_tokens_from, simplified=True, startswith=SEQ2SEQ_TOKENS
        )
        arrays = apply_keep_tokens(arrays, keep_tokens, args.checkpoint)
    path = write_safetensors(arrays, args.output, keep_tokens)
    for name in sorted(arrays):
        array = arrays[name]
        print(f"{name:64s} {str(array.shape):14s} {array.dtype}")
    size = sum(array.nbytes for array in arrays.values()) / 2**20
    print(f"wrote {len(arrays)} tensors ({size:.1f} MiB) to {path}")
    if keep_tokens is not None:
        print(f"kept {len(keep_tokens)} of the vocabulary rows")
    total = sum(int(np.prod(array.shape)) for array in arrays.values())
    print(f"{total:,} parameters")


if __name__ == "__main__":
    main()
