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
import pathlib

import numpy as np

from tasks.lib.cli import ArgumentParser
from tasks.lib.cli import HelpFormatter
from tasks.lib.cli import fail
from tasks.lib.cli import quiet
from tasks.lib.cli import run_main
from weights.formats import read_checkpoint
from weights.formats import write_safetensors
from weights.loader import apply_keep_tokens


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """Keep the usage example's layout and show defaults."""


def parse_args(argv=None):
    parser = ArgumentParser(
        prog="python -m weights.convert",
        description=__doc__,
        formatter_class=_HelpFormatter,
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
        fail(f"output {output}: expected a file name ending in .safetensors")
    if output.is_dir():
        fail(f"output {output}: is a directory; expected a file name")
    if not output.parent.is_dir():
        fail(f"output {output}: no directory {output.parent}")
    source = pathlib.Path(args.checkpoint)
    if source.exists() and output.exists() and source.samefile(output):
        fail(f"output {output}: is the checkpoint itself")
    vocab = args.keep_tokens_from
    if vocab is not None and not pathlib.Path(vocab).is_file():
        fail(f"--keep-tokens-from {vocab}: no such file")


def main(argv=None) -> None:
    args = parse_args(argv)
    quiet()  # before TensorFlow loads to read a TF checkpoint
    run_main(convert, args, prog="python -m weights.convert")


def convert(args):
    check_args(args)
    arrays = read_checkpoint(args.checkpoint)
    keep_tokens = None
    if args.keep_tokens_from:
        from data.vocab import SEQ2SEQ_TOKENS
        from data.vocab import load_vocab

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
