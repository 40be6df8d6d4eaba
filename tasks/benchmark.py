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
"""

import argparse
import pathlib
import statistics
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SHARED = REPO_ROOT.parent / "shared"
CSL_DEV = SHARED / "data" / "csl_ts" / "dev.tsv"
VOCAB = SHARED / "vocab" / "bert-base-chinese" / "vocab.txt"


def read_abstracts(path, n):
    """The first n abstracts of a `to title<TAB>abstract<TAB>title` file."""
    abstracts = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(
                    f"{path}:{number}: expected 3 tab-separated fields "
                    f"(prefix, abstract, title), got {len(fields)}"
                )
            abstracts.append(fields[1])
            if len(abstracts) == n:
                break
    if len(abstracts) < n:
        raise ValueError(f"{path}: only {len(abstracts)} lines, --n {n}")
    return abstracts


def build_random_unilm(args, vocab_size, end_id):
    """A random UniLM model; `--end-bias` makes titles end at varied
    lengths, as a trained model's do (a random one almost never ends)."""
    import keras
    import numpy as np

    from models.bert import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    model = build_transformer_model(
        None, application="unilm", vocab_size=vocab_size,
        hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate or 4 * args.hidden,
        max_position_embeddings=args.max_positions,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    bias = np.zeros(vocab_size, dtype="float32")
    bias[end_id] = args.end_bias
    model.bert_network["MLM-Bias"].bias.assign(bias)
    return model


def timed(decode, sources):
    started = time.perf_counter()
    titles = decode(sources)
    return titles, time.perf_counter() - started


def decode_rows(args, model, end_id, sources):
    """One table row per beam size: timings and identity."""
    from models.decoding import Seq2SeqDecoder

    common = dict(end_id=end_id, maxlen=args.maxlen)
    fast = Seq2SeqDecoder(model, batch_size=args.batch_size,
                          bucket=args.bucket, **common)
    reference = Seq2SeqDecoder(model, reference=True, **common)
    subset = sources[:args.reference_n or len(sources)]
    reference.beam_search(subset[0], 1)  # one-off tracing, not timed
    rows = []
    for beam in args.beams:
        def fast_decode(batch):
            return fast.beam_search_batch(batch, beam,
                                          progress=args.progress)

        _, cold = timed(fast_decode, sources)
        titles, warm = timed(fast_decode, sources)
        expected, slow = timed(
            lambda batch: reference.beam_search_batch(
                batch, beam, progress=args.progress),
            subset,
        )
        rows.append({
            "beam": beam, "ref_n": len(subset),
            "ref": len(subset) / slow, "fast": len(sources) / warm,
            "first": len(sources) / cold,
            "same": titles[:len(subset)] == expected,
            "lengths": [len(t) for t in titles],
        })
        print_row(rows[-1], header=len(rows) == 1)
    return rows


def print_row(row, header):
    if header:
        print("| beam | ref n | ref titles/s | fast titles/s | speed-up "
              "| fast 1st run titles/s (with compile) | identical |")
        print("|---:|---:|---:|---:|---:|---:|:---:|")
    print(f"| {row['beam']} | {row['ref_n']} | {row['ref']:.2f} "
          f"| {row['fast']:.1f} | {row['fast'] / row['ref']:.0f}x "
          f"| {row['first']:.1f} | {'yes' if row['same'] else 'NO'} |",
          flush=True)


def run_decode(args):
    """`decode` subcommand: see the module docstring."""
    import keras

    from data import Tokenizer

    tokenizer = Tokenizer(str(args.vocab), do_lower_case=True)
    end_id = tokenizer._token_end_id
    source_maxlen = args.source_maxlen or args.max_positions - args.maxlen
    sources = [
        tokenizer.encode(text, maxlen=source_maxlen)[0]
        for text in read_abstracts(args.data, args.n)
    ]
    model = build_random_unilm(args, tokenizer.vocab_size, end_id)
    lengths = [len(ids) for ids in sources]
    print("command: python tasks/benchmark.py " + " ".join(sys.argv[1:]))
    print(f"backend {keras.backend.backend()}; model {args.layers} layers x "
          f"{args.hidden} hidden, {args.heads} heads, vocab "
          f"{tokenizer.vocab_size}; {len(sources)} CSL abstracts from "
          f"{args.data.name}, source tokens mean "
          f"{statistics.mean(lengths):.0f} (max {max(lengths)}, cut at "
          f"{source_maxlen}); title maxlen {args.maxlen}; fast batch "
          f"{args.batch_size} sources, bucket {args.bucket}")
    rows = decode_rows(args, model, end_id, sources)
    for row in rows:
        lengths = row["lengths"]
        print(f"beam {row['beam']}: title tokens mean "
              f"{statistics.mean(lengths):.1f}, min {min(lengths)}, "
              f"max {max(lengths)}")
    return rows


def add_decode_parser(subparsers):
    parser = subparsers.add_parser(
        "decode", help="cached batched decoding vs full recompute",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=200,
                        help="CSL abstracts decoded by the fast path")
    parser.add_argument("--reference-n", type=int, default=None,
                        help="decode only the first N with the reference "
                             "(slow); identity is checked on those")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--maxlen", type=int, default=32,
                        help="title tokens at most")
    parser.add_argument("--source-maxlen", type=int, default=None,
                        help="source tokens at most (default: "
                             "max-positions - maxlen)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=None,
                        help="feed-forward width (default 4 x hidden)")
    parser.add_argument("--max-positions", type=int, default=256,
                        help="max_position_embeddings; bert4keras's CSL "
                             "script uses sources + titles of 256")
    parser.add_argument("--end-bias", type=float, default=0.1,
                        help="MLM bias of [SEP], so titles end at varied "
                             "lengths (0: almost all run to maxlen)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="sources per fast batch")
    parser.add_argument("--bucket", type=int, default=32,
                        help="source lengths padded to a multiple of this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=pathlib.Path, default=CSL_DEV)
    parser.add_argument("--vocab", type=pathlib.Path, default=VOCAB)
    parser.add_argument("--progress", action="store_true",
                        help="tqdm bars over batches / sources")
    parser.set_defaults(run=run_decode)


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_decode_parser(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    main()
