"""The train, validation and test pairs of a seq2seq run, and what they
are: one file per split, one file split by seed (`--data`), or, with
neither, the synthetic pairs of the built-in default.

Each split's file, its sha256 and its pair counts go into the results, so
that runs on other data cannot be compared unawares.
"""

import sys

from data import read_pairs
from data import read_pairs_with_report
from data import sha256_of
from data import split_pairs
from data import synthetic
from tasks.lib.cli import fail
from tasks.lib.seq2seq_options import TINY

SPLITS = ("train", "valid", "test")


def is_tiny_default(args, files) -> bool:
    """The built-in default: neither a model config nor data given."""
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
        splits = [_read(getattr(args, name), args) for name in SPLITS]
        files = [
            _file_info(getattr(args, name), len(pairs))
            for name, pairs in zip(SPLITS, splits)
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
