"""Speed benchmarks.

`decode`: titles per second of the cached, batched decoder against
bert4keras-style full recompute, on real CSL abstracts, with a small random
UniLM model (speed does not depend on the weights). Both paths run in this
process on the same model and the same sources; the table says whether their
titles are identical.

Usage:

    python tasks/benchmark.py decode --n 200
    python tasks/benchmark.py decode --n 200 --reference-n 50 --beams 1 3

The fast path runs twice: the first run includes compiling (once per length
bucket and beam size), the second is the steady state the speed-up uses.

`padding`: the share of padding in real CSL training batches under each
batch layout (shuffled; sorted by length within windows; lengths rounded
to multiples of 32, 16, 8 or exact), the compiled shapes each needs, and
how many positions per row the loss's MLM head scores (gathered vs full):

    python tasks/benchmark.py padding

`train`: training-step speed of `Seq2SeqTrainer` (BERT-base UniLM by
default, maxlen 256, random tokens) for each strategy and batch size, with
tokens/s, model FLOPs utilisation (MFU) and peak device memory, against
the same step written with Hugging Face `BertForMaskedLM` in PyTorch (the
peer: UniLM mask as a 4-D additive attention mask, autocast, AdamW) in the
same run, on the same shapes:

    python tasks/benchmark.py train
    python tasks/benchmark.py train --batch-sizes 16 --strategies baseline gp
    python tasks/benchmark.py train --strategies baseline professor \
        professor:every=4

A strategy is named alone (its defaults) or with options, `NAME:KEY=VALUE`
(repeat `:KEY=VALUE` for more), as `--strategy-option` takes them.

`t5`: an mT5 (T5 v1.1) training step and greedy / beam decoding against
Hugging Face's `MT5ForConditionalGeneration` in PyTorch, on the same
random weights and batch:

    python tasks/benchmark.py t5
    python tasks/benchmark.py t5 --layers 2 --d-model 128 --n 8

See tasks/lib/benchmarks/train.py for what is timed and
tasks/lib/benchmarks/flops.py for the FLOPs formula.
"""

from tasks.lib.benchmarks import build_parser
from tasks.lib.cli import run_main


def main(argv=None):
    args = build_parser(__doc__).parse_args(argv)
    args.check(args)
    return args.run(args)


if __name__ == "__main__":
    run_main(main, prog="benchmark.py")
