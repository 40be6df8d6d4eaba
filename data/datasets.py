"""Readers for title-generation pairs, returned as `(title, content)`.

Two tab-separated formats exist in the wild:

- CLGE (`title<TAB>content`), also used by the LCSTS samples and by
  bert4keras's `task_seq2seq_autotitle_csl.py`;
- the CSL benchmark (`to title<TAB>abstract<TAB>title`), whose first column
  is a task prompt and is ignored.

A bad line raises `DataFormatError` naming the file, the 1-based line and
what was expected, because a silently shifted column turns abstracts into
titles and the scores stay plausible. Blank lines are ignored. Reports name
files by checksum (`sha256_of`): CSL 10k vs 3k alone moves ROUGE-L by 8.
"""

import hashlib
import os
import random
import warnings
from dataclasses import dataclass
from dataclasses import field

Pair = tuple[str, str]

# Columns per format, in file order; "title" and "content" are kept.
FORMATS = {
    "clge": ("title", "content"),
    "csl": ("prefix", "content", "title"),
}
_COLUMN_NAMES = {"clge": "title, content", "csl": "prefix, abstract, title"}


class DataFormatError(ValueError):
    """A pair file that does not match its format; `path` and `line` say
    where (`line` is None when the problem is the whole file)."""

    def __init__(self, path: str, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


@dataclass
class PairsReport:
    """What `read_pairs_with_report` read and what it skipped."""

    pairs: list[Pair]
    fmt: str
    skipped: list[DataFormatError] = field(default_factory=list)

    @property
    def skipped_lines(self) -> list[int]:
        return [error.line for error in self.skipped]


def read_pairs(
    path: str | os.PathLike, fmt: str = "auto", skip_bad_lines: bool = False
) -> list[Pair]:
    """Read `(title, content)` pairs in file order.

    `fmt` is 'clge', 'csl' or 'auto' (from the first non-empty line: 2
    columns -> clge, 3 -> csl). The first bad line raises; with
    `skip_bad_lines` bad lines are left out with one warning that counts
    them (`read_pairs_with_report` returns the skipped lines themselves).
    """
    report = read_pairs_with_report(path, fmt)
    if report.skipped and not skip_bad_lines:
        raise report.skipped[0]
    if report.skipped:
        lines = report.skipped_lines
        warnings.warn(
            f"{os.fspath(path)}: skipped {len(lines)} bad line(s), "
            f"lines {lines[:10]}; first: {report.skipped[0]}",
            stacklevel=2,
        )
    return report.pairs


def read_pairs_with_report(
    path: str | os.PathLike, fmt: str = "auto"
) -> PairsReport:
    """Read pairs, collecting each bad line as a `DataFormatError`.

    An empty file, or one whose format cannot be detected, always raises:
    no line of it could be read.
    """
    path = os.fspath(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise ValueError(f"fmt must be 'auto' or one of {sorted(FORMATS)}")
    lines = [
        (number, raw)
        for number, raw in _numbered_lines(path)
        if raw.strip(b" ")  # blank lines carry no pair; a tab is not blank
    ]
    if not lines:
        raise DataFormatError(path, None, "empty file: no pairs to read")
    if fmt == "auto":
        fmt = _detect_format(path, *lines[0])
    report = PairsReport(pairs=[], fmt=fmt)
    for number, raw in lines:
        try:
            report.pairs.append(_parse_line(path, number, raw, fmt))
        except DataFormatError as error:
            report.skipped.append(error)
    return report


def _numbered_lines(path: str):
    """Yield `(line_number, raw_bytes)` without BOM and line ending."""
    with open(path, "rb") as reader:
        for number, raw in enumerate(reader, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            yield number, raw.rstrip(b"\r\n")


def _decode(path: str, number: int, raw: bytes) -> str:
    """Decode one line, so an encoding error names its line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"not valid UTF-8 at byte {error.start}"
        raise DataFormatError(path, number, message) from None


def _detect_format(path: str, number: int, raw: bytes) -> str:
    columns = len(_decode(path, number, raw).split("\t"))
    for fmt, names in FORMATS.items():
        if columns == len(names):
            return fmt
    raise DataFormatError(
        path,
        number,
        "cannot detect the format: expected 2 tab-separated columns "
        f"(title, content) or 3 (prefix, abstract, title), found {columns}",
    )


def _parse_line(path: str, number: int, raw: bytes, fmt: str) -> Pair:
    names = FORMATS[fmt]
    values = _decode(path, number, raw).split("\t")
    if len(values) != len(names):
        raise DataFormatError(
            path,
            number,
            f"expected {len(names)} tab-separated columns "
            f"({_COLUMN_NAMES[fmt]}), found {len(values)}",
        )
    row = dict(zip(names, (value.strip() for value in values)))
    for name in ("title", "content"):
        if not row[name]:
            column = names.index(name) + 1
            message = f"empty {name} (column {column})"
            raise DataFormatError(path, number, message)
    return row["title"], row["content"]


def split_pairs(
    pairs: list[Pair],
    valid_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Split into `(train, valid, test)`, the same for the same seed.

    Sizes are rounded from the fractions; each split keeps file order so
    splits are easy to inspect and diff.
    """
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError("fractions must be in [0, 1)")
    if valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction + test_fraction must be below 1")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_test = round(len(pairs) * test_fraction)
    n_valid = round(len(pairs) * valid_fraction)
    test, valid = order[:n_test], order[n_test : n_test + n_valid]
    parts = (order[n_test + n_valid :], valid, test)
    return tuple([pairs[i] for i in sorted(part)] for part in parts)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, so a report names exactly the data it used."""
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        for chunk in iter(lambda: reader.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
