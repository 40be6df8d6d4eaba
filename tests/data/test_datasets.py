"""Pair readers: both formats, detection, errors naming file and line."""

import hashlib
import re
import warnings

import pytest

from data.datasets import DataFormatError
from data.datasets import read_pairs
from data.datasets import read_pairs_with_report
from data.datasets import sha256_of
from data.datasets import split_pairs
from tests.common import CLGE_DIR
from tests.common import require_shared

CLGE_TEXT = "标题一\t内容一，很长。\n标题二\t内容二\n"
CSL_TEXT = "to title\t摘要一\t标题一\nto title\t摘要二\t标题二\n"
EXPECTED = [("标题一", "内容一，很长。"), ("标题二", "内容二")]


def write(tmp_path, text, name="pairs.tsv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("fmt", ["auto", "clge"])
def test_clge_format(tmp_path, fmt):
    assert read_pairs(write(tmp_path, CLGE_TEXT), fmt) == EXPECTED


@pytest.mark.parametrize("fmt", ["auto", "csl"])
def test_csl_format(tmp_path, fmt):
    expected = [("标题一", "摘要一"), ("标题二", "摘要二")]
    assert read_pairs(write(tmp_path, CSL_TEXT), fmt) == expected


def test_csl_prefix_may_be_any_text(tmp_path):
    path = write(tmp_path, "生成标题\t摘要\t标题\n\t摘要二\t标题二\n")
    assert read_pairs(path) == [("标题", "摘要"), ("标题二", "摘要二")]


def test_detected_format_is_reported(tmp_path):
    assert read_pairs_with_report(write(tmp_path, CSL_TEXT)).fmt == "csl"
    assert read_pairs_with_report(write(tmp_path, CLGE_TEXT)).fmt == "clge"


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path):
    text = "\ufeff\n" + CLGE_TEXT.replace("\n", "\r\n") + "\r\n\n  \n"
    assert read_pairs(write(tmp_path, text)) == EXPECTED


def test_real_csl_dev(csl_dev_path):
    pairs = read_pairs(csl_dev_path)
    assert len(pairs) == 1000
    title = "一种基于平方和优化的飞行器大角度机动镇定控制器设计方法"
    assert pairs[0][0] == title
    assert pairs[0][1].startswith("采用修正的Rodrigues参数(MRP)")


def test_real_clge_samples():
    folder = require_shared(CLGE_DIR)
    assert len(read_pairs(folder / "csl_sample.tsv")) == 5
    lcsts = read_pairs(folder / "lcsts_sample.tsv")
    assert len(lcsts) == 12
    assert lcsts[0][0] == "对赌协议的18个致命陷阱"


# (file text, fmt, line, message): every way a file can be wrong.
BAD_FILES = [
    (
        "a\tb\tc\nx\ty\n",
        "auto",
        2,
        "expected 3 tab-separated columns (prefix, abstract, title), found 2",
    ),
    (
        "t\tc\nt\tc\textra\n",
        "auto",
        2,
        "expected 2 tab-separated columns (title, content), found 3",
    ),
    (
        CSL_TEXT,
        "clge",
        1,
        "expected 2 tab-separated columns (title, content), found 3",
    ),
    ("t\tc\n \tc\n", "clge", 2, "empty title (column 1)"),
    ("t\tc\nt\t \n", "clge", 2, "empty content (column 2)"),
    ("p\ta\tt\np\ta\t\n", "csl", 2, "empty title (column 3)"),
    ("p\ta\tt\n\n\np\t\tt\n", "csl", 4, "empty content (column 2)"),
    ("\nno tabs here\n", "auto", 2, "cannot detect the format"),
    ("a\tb\tc\td\n", "auto", 1, "cannot detect the format"),
]


@pytest.mark.parametrize("text, fmt, line, message", BAD_FILES)
def test_bad_line_names_file_and_line(tmp_path, text, fmt, line, message):
    path = write(tmp_path, text, name="dev.tsv")
    with pytest.raises(DataFormatError) as info:
        read_pairs(path, fmt)
    assert str(info.value).startswith(f"{path}:{line}: {message}")
    assert (info.value.path, info.value.line) == (str(path), line)
    assert isinstance(info.value, ValueError)


def test_exact_message_for_a_missing_column(tmp_path):
    path = write(tmp_path, "p\ta\tt\n" * 16 + "p\ta\n", name="dev.tsv")
    message = (
        f"{path}:17: expected 3 tab-separated columns "
        "(prefix, abstract, title), found 2"
    )
    with pytest.raises(DataFormatError, match=re.escape(message)):
        read_pairs(path)


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff", "  \n"])
def test_empty_file_names_the_file(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: empty")):
        read_pairs(path, skip_bad_lines=True)


def test_invalid_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "t\tc\n".encode() + b"\xff\xfe\tc\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:2: not")):
        read_pairs(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "absent.tsv")


def test_unknown_format_name(tmp_path):
    with pytest.raises(ValueError, match="fmt must be"):
        read_pairs(write(tmp_path, CLGE_TEXT), fmt="json")


BAD_LINES_TEXT = "t1\tc1\nonly one column\nt2\tc2\n\tc3\nt4\tc4\n"


def test_skip_bad_lines_counts_them(tmp_path):
    path = write(tmp_path, BAD_LINES_TEXT)
    with pytest.warns(UserWarning, match=r"skipped 2 bad line\(s\), lines"):
        pairs = read_pairs(path, skip_bad_lines=True)
    assert pairs == [("t1", "c1"), ("t2", "c2"), ("t4", "c4")]
    report = read_pairs_with_report(path)
    assert report.pairs == pairs and report.skipped_lines == [2, 4]
    assert "empty title" in str(report.skipped[1])


def test_bad_lines_raise_by_default(tmp_path):
    with pytest.raises(DataFormatError, match=":2: expected 2"):
        read_pairs(write(tmp_path, BAD_LINES_TEXT))


def test_good_file_gives_no_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_pairs(write(tmp_path, CLGE_TEXT), skip_bad_lines=True)


def test_split_sizes_and_coverage():
    pairs = [(f"t{i}", f"c{i}") for i in range(100)]
    train, valid, test = split_pairs(pairs, 0.1, 0.2, seed=0)
    assert (len(train), len(valid), len(test)) == (70, 10, 20)
    assert sorted(train + valid + test) == sorted(pairs)
    assert train == [p for p in pairs if p in train]  # file order kept


def test_split_is_deterministic_by_seed():
    pairs = [(f"t{i}", f"c{i}") for i in range(50)]
    first = split_pairs(pairs, 0.2, 0.2, seed=3)
    assert split_pairs(pairs, 0.2, 0.2, seed=3) == first
    assert split_pairs(pairs, 0.2, 0.2, seed=4) != first


@pytest.mark.parametrize("valid, test", [(0.5, 0.5), (-0.1, 0.1), (1.0, 0)])
def test_split_rejects_bad_fractions(valid, test):
    with pytest.raises(ValueError):
        split_pairs([("t", "c")] * 10, valid, test, seed=0)


def test_sha256_of(tmp_path):
    path = write(tmp_path, CSL_TEXT)
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_of(write(tmp_path, CLGE_TEXT, "b.tsv")) != sha256_of(path)
