"""Abstracts in, titles out: the files of `tasks/generate.py`.

Input is one abstract a line, or a pairs file in the CLGE
(`title<TAB>content`) or CSL (`prefix<TAB>abstract<TAB>title`) format,
detected per file by `data.read_pairs` (two or three columns); a first
line without a tab means one abstract a line. Output is TSV (a header,
then one row per title) or JSON lines (one object per abstract). Plain
Python: no Keras.
"""

import dataclasses
import json
import os
import sys
import tempfile
from typing import Iterable
from typing import NamedTuple

from data import DataFormatError
from data import read_pairs
from tasks.lib.atomic import atomic_write_text

INPUT_FORMATS = ("auto", "lines", "clge", "csl")
OUTPUT_FORMATS = ("tsv", "jsonl")
STDIN = "-"
TSV_COLUMNS = ("input", "rank", "score", "title")


@dataclasses.dataclass
class Abstract:
    """One text to title; `reference` is the title a pairs file gives."""

    text: str
    reference: str | None = None


class Title(NamedTuple):
    """A decoded title; `score` is its summed log-probability (beam
    search's, length-normalised under a length penalty), None when
    sampled."""

    text: str
    score: float | None

    def as_json(self) -> dict:
        return {"title": self.text, "score": self.score}


def read_abstracts(path: str | None, fmt: str = "auto") -> list[Abstract]:
    """The abstracts of a file, or of standard input (`path` None or '-').

    Errors name the file ('<stdin>') and line. In 'lines' format every
    line is an abstract, blank ones included, so that output rows keep the
    input's line numbers.
    """
    if path is None or path == STDIN:
        return _read_stdin(fmt)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as reader:
        data = reader.read()
    return _read(path, path, data, fmt)


def _read_stdin(fmt):
    """Standard input through a temporary file, which `read_pairs` reads;
    its errors then name '<stdin>' instead of the temporary name."""
    data = sys.stdin.buffer.read()
    with tempfile.TemporaryDirectory() as folder:
        temporary = os.path.join(folder, "stdin")
        with open(temporary, "wb") as writer:
            writer.write(data)
        try:
            return _read(temporary, "<stdin>", data, fmt)
        except ValueError as error:
            message = str(error).replace(temporary, "<stdin>")
            raise ValueError(message) from None


def _read(path, name, data, fmt):
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise ValueError(f"{name}: empty input: no abstract to read")
    if fmt == "lines":
        return _plain_lines(name, lines)
    if fmt == "auto" and b"\t" not in lines[first]:
        _refuse_columns(name, lines, first)
        return _plain_lines(name, lines)
    pairs = read_pairs(path, fmt=fmt)
    return [Abstract(content, title) for title, content in pairs]


def _refuse_columns(name, lines, first):
    """One abstract a line, detected from a line without a tab: a later
    line with tabs is a pairs file gone wrong, not an abstract."""
    for number, line in enumerate(lines, start=1):
        if b"\t" in line:
            raise DataFormatError(
                name,
                number,
                f"tab-separated columns, but line {first + 1} has none "
                "(one abstract a line); --input-format lines reads tabs "
                "as text",
            )


def _plain_lines(name, lines):
    abstracts = []
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataFormatError(
                name, number, f"not valid UTF-8 at byte {error.start}"
            ) from None
        abstracts.append(Abstract(text))
    return abstracts


# Output --------------------------------------------------------------------


def tsv_lines(results: Iterable[list[Title]]) -> Iterable[str]:
    """A header, then `input, rank, score, title` per title (score empty
    for a sampled title; the title on one line)."""
    yield "\t".join(TSV_COLUMNS)
    for number, titles in enumerate(results, start=1):
        for rank, title in enumerate(titles, start=1):
            score = "" if title.score is None else f"{title.score:.4f}"
            text = " ".join(title.text.split())
            yield f"{number}\t{rank}\t{score}\t{text}"


def jsonl_lines(
    abstracts: list[Abstract], results: Iterable[list[Title]]
) -> Iterable[str]:
    """One JSON object per abstract: its number, text, reference (pairs
    files) and titles with scores."""
    for number, (abstract, titles) in enumerate(zip(abstracts, results), 1):
        record = {"input": number, "text": abstract.text}
        if abstract.reference is not None:
            record["reference"] = abstract.reference
        record["titles"] = [title.as_json() for title in titles]
        yield json.dumps(record, ensure_ascii=False)


def write_lines(lines: Iterable[str], path: str | None) -> None:
    """To standard output, or to `path` atomically (a file is either the
    old one or complete)."""
    text = "".join(f"{line}\n" for line in lines)
    if path is None or path == STDIN:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(path, text)
