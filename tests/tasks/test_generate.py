"""tasks/generate.py: titles for new abstracts from a run or model dir.

The strong check: fed its own test sources, a finished run's titles are
those of its predictions files, at each beam size; n-best scores are the
decoder's. Reading inputs and bad input are checked without a model.
"""

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from tasks import generate
from tasks.lib.abstracts import Abstract
from tasks.lib.abstracts import Title
from tasks.lib.abstracts import jsonl_lines
from tasks.lib.abstracts import read_abstracts
from tasks.lib.abstracts import tsv_lines
from tests.common import ROOT

SCRIPT = ROOT / "tasks" / "generate.py"
ODD_LINES = ["", "😀", "\u200b", "字", "  ", "a\u0301\u0301"]


def run_script(*args, stdin=""):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )


def generate_main(capsys, monkeypatch, argv, stdin=None):
    """`generate.main(argv)` in this process: (exit code, stdout, stderr)."""
    if stdin is not None:
        data = io.BytesIO(stdin.encode("utf-8"))
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(data))
    try:
        code = generate.main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err):
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("generate.py: error: "), err
    assert "Traceback" not in err
    return err


def tsv_titles(text):
    """{input number: [(rank, score, title), ...]} of a TSV output."""
    lines = text.splitlines()
    assert lines[0] == "input\trank\tscore\ttitle"
    titles = {}
    for line in lines[1:]:
        number, rank, score, title = line.split("\t")
        titles.setdefault(int(number), []).append((int(rank), score, title))
    return titles


# Without a model ----------------------------------------------------------

WITHOUT_BACKEND = """
import runpy, sys
sys.argv = ["generate.py", *sys.argv[1:]]
try:
    runpy.run_path("tasks/generate.py", run_name="__main__")
except SystemExit as stop:
    print("exit", stop.code)
print(sorted({"keras", "tensorflow", "jax"} & set(sys.modules)))
"""


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--help"], "exit 0"),
        (["nowhere"], "nowhere: no such directory"),
        ([".", "--beams", "0"], "--beams 0: expected 1 or more"),
        ([".", "--nbest", "3", "--beams", "2"], "at most --beams (2)"),
        ([".", "--topk", "5"], "--topk: does not apply to beam search"),
        ([".", "--sample", "--nbest", "2"], "--nbest: does not apply"),
        ([".", "--sample", "--length-penalty", "1"], "--length-penalty"),
        ([".", "--maxlen", "1"], "--maxlen 1: expected 2 or more"),
    ],
)
def test_help_and_argument_errors_answer_before_the_backend_loads(
    argv, expected
):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_BACKEND, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert result.stdout.splitlines()[-1] == "[]", result.stdout
    assert expected in result.stdout + result.stderr
    if argv != ["--help"]:
        assert "exit 2" in result.stdout
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_describes_every_option():
    parser = generate.build_parser()
    for action in parser._actions:
        assert action.help, action.dest
    assert "Usage:" in parser.description


def test_a_line_that_does_not_parse_names_file_and_line(
    tmp_path, capsys, monkeypatch
):
    path = tmp_path / "pairs.tsv"
    path.write_text("标题\t摘要\n只有一列\n", encoding="utf-8")
    code, _, err = generate_main(capsys, monkeypatch, [tmp_path, path])
    err = one_line_error(code, err)
    assert f"{path}:2: expected 2 tab-separated columns" in err
    code, _, err = generate_main(
        capsys, monkeypatch, [tmp_path], stdin="摘要\n标题\t摘要\n"
    )
    assert "<stdin>:2: tab-separated columns, but line 1 has none" in (
        one_line_error(code, err)
    )


def test_empty_input_is_refused(tmp_path, capsys, monkeypatch):
    code, _, err = generate_main(capsys, monkeypatch, [tmp_path], stdin="")
    assert "<stdin>: empty input" in one_line_error(code, err)
    code, _, err = generate_main(
        capsys, monkeypatch, [tmp_path, "-"], stdin="\n \n"
    )
    assert "<stdin>: empty input" in one_line_error(code, err)
    code, _, err = generate_main(
        capsys, monkeypatch, [tmp_path, tmp_path / "none.txt"]
    )
    assert "none.txt: no such file" in one_line_error(code, err)


def test_a_folder_that_is_no_run_nor_model_is_named(
    tmp_path, capsys, monkeypatch
):
    (tmp_path / "config.json").write_text("{}")
    code, _, err = generate_main(capsys, monkeypatch, [tmp_path], stdin="x\n")
    err = one_line_error(code, err)
    assert "not a run directory (no results.json) nor a model" in err
    assert "no checkpoint" in err


def test_an_unfinished_run_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "state.json").write_text("{}")
    code, _, err = generate_main(capsys, monkeypatch, [tmp_path], stdin="x\n")
    assert "not a finished run (no results.json)" in one_line_error(code, err)


def test_abstracts_one_a_line_keep_blank_and_odd_lines(tmp_path):
    path = tmp_path / "abstracts.txt"
    path.write_bytes(
        b"\xef\xbb\xbffirst\r\n" + "\n".join(ODD_LINES).encode() + b"\n"
    )
    abstracts = read_abstracts(str(path))
    assert [a.text for a in abstracts] == ["first", *ODD_LINES]
    assert all(a.reference is None for a in abstracts)


def test_pairs_files_are_detected_as_the_datasets_do(tmp_path):
    clge = tmp_path / "clge.tsv"
    clge.write_text("标题一\t摘要一\n\n标题二\t摘要二\n", encoding="utf-8")
    csl = tmp_path / "csl.tsv"
    csl.write_text("to title\t摘要一\t标题一\n", encoding="utf-8")
    assert read_abstracts(str(clge)) == [
        Abstract("摘要一", "标题一"),
        Abstract("摘要二", "标题二"),
    ]
    assert read_abstracts(str(csl)) == [Abstract("摘要一", "标题一")]
    tabs = tmp_path / "tabs.txt"
    tabs.write_text("a\tb\tc\td\n", encoding="utf-8")
    assert read_abstracts(str(tabs), "lines") == [Abstract("a\tb\tc\td")]
    with pytest.raises(ValueError, match="tabs.txt:1: cannot detect"):
        read_abstracts(str(tabs))


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "abstracts.txt"
    path.write_bytes(b"good\nbad \xff\n")
    with pytest.raises(ValueError, match="abstracts.txt:2: not valid UTF-8"):
        read_abstracts(str(path))


def test_outputs_hold_every_title_with_its_score():
    results = [
        [Title("标题\t一", -1.5), Title("二", -2.25)],
        [Title("三", None)],
    ]
    assert list(tsv_lines(results)) == [
        "input\trank\tscore\ttitle",
        "1\t1\t-1.5000\t标题 一",
        "1\t2\t-2.2500\t二",
        "2\t1\t\t三",
    ]
    abstracts = [Abstract("摘要", "标题"), Abstract("x")]
    records = [json.loads(line) for line in jsonl_lines(abstracts, results)]
    assert records[0] == {
        "input": 1,
        "text": "摘要",
        "reference": "标题",
        "titles": [
            {"title": "标题\t一", "score": -1.5},
            {"title": "二", "score": -2.25},
        ],
    }
    assert records[1] == {
        "input": 2,
        "text": "x",
        "titles": [{"title": "三", "score": None}],
    }


# On a finished run -------------------------------------------------------


@pytest.mark.slow
def test_stdin_titles_are_the_runs_own_predictions(tiny_run, tiny_predictions):
    rows = tiny_predictions[1]
    result = run_script(
        tiny_run, stdin="".join(f"{source}\n" for source, _ in rows)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    titles = tsv_titles(result.stdout)
    assert len(titles) == len(rows)
    for number, (_, prediction) in enumerate(rows, start=1):
        ((rank, score, title),) = titles[number]
        assert (rank, title) == (1, prediction)
        assert float(score) < 0


@pytest.mark.slow
def test_the_run_directory_alone_is_enough(
    tiny_run, tiny_predictions, tmp_path
):
    """A moved copy of a run, whose settings name files that are gone (its
    vocabulary, its data), titles as the run did: the run keeps its model's
    config and vocabulary (model.json, model-vocab.txt)."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    (moved / "vocab.txt").unlink()
    settings = json.loads((moved / "config.json").read_text("utf-8"))
    settings.update(vocab=str(tmp_path / "gone.txt"), data=None, train=None)
    (moved / "config.json").write_text(json.dumps(settings), "utf-8")
    rows = tiny_predictions[1]
    result = run_script(
        moved, stdin="".join(f"{source}\n" for source, _ in rows)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    titles = tsv_titles(result.stdout)
    for number, (_, prediction) in enumerate(rows, start=1):
        assert titles[number][0][2] == prediction


@pytest.mark.slow
def test_nbest_scores_are_the_decoders(
    tiny_run, tiny_predictions, tmp_path, capsys, monkeypatch
):
    from models.decoding import Seq2SeqDecoder
    from tasks.lib.run_diagnostics import check_run_dir
    from tasks.lib.run_diagnostics import rebuild

    rows = tiny_predictions[2][:40]
    path = tmp_path / "abstracts.txt"
    path.write_text("".join(f"{s}\n" for s, _ in rows), encoding="utf-8")
    argv = [tiny_run, path, "--beams", "2", "--nbest", "2", "--format"]
    code, out, err = generate_main(capsys, monkeypatch, [*argv, "jsonl"])
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]

    run = rebuild(*check_run_dir(tiny_run))
    args = run.args
    decoder = Seq2SeqDecoder(
        run.model,
        end_id=run.tokenizer.end_id,
        maxlen=args.title_maxlen,
        minlen=args.min_length,
        length_penalty=args.length_penalty,
    )
    sources = [
        run.tokenizer.encode(s, maxlen=args.maxlen - args.title_maxlen)[0]
        for s, _ in rows
    ]
    expected = decoder.beam_search_batch(sources, 2, nbest=True)
    for record, (source, prediction), nbest in zip(records, rows, expected):
        assert record["text"] == source
        titles = [t["title"] for t in record["titles"]]
        scores = [t["score"] for t in record["titles"]]
        assert titles[0] == prediction
        assert titles == [run.tokenizer.decode(ids) for ids, _ in nbest]
        assert scores == pytest.approx([s for _, s in nbest], abs=1e-5)
        # The answer first, then the other complete titles by score.
        assert scores[1:] == sorted(scores[1:], reverse=True)
    assert any(len(r["titles"]) == 2 for r in records)

    # The same titles in TSV, to a file.
    output = tmp_path / "titles.tsv"
    code, out, _ = generate_main(
        capsys, monkeypatch, [*argv, "tsv", "--output", output]
    )
    assert code == 0 and out == ""
    titles = tsv_titles(output.read_text(encoding="utf-8"))
    for number, record in enumerate(records, start=1):
        expected = [
            (rank, f"{t['score']:.4f}", t["title"])
            for rank, t in enumerate(record["titles"], start=1)
        ]
        assert titles[number] == expected


@pytest.mark.slow
def test_pairs_files_and_odd_lines(
    tiny_run, tiny_predictions, tmp_path, capsys, monkeypatch
):
    rows = tiny_predictions[1][:8]
    clge = tmp_path / "clge.tsv"
    clge.write_text(
        "".join(f"参考{i}\t{s}\n" for i, (s, _) in enumerate(rows)), "utf-8"
    )
    csl = tmp_path / "csl.tsv"
    csl.write_text(
        "".join(f"to title\t{s}\t参考{i}\n" for i, (s, _) in enumerate(rows)),
        "utf-8",
    )
    for path in (clge, csl):
        code, out, err = generate_main(
            capsys, monkeypatch, [tiny_run, path, "--format", "jsonl"]
        )
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["reference"] for r in records] == [
            f"参考{i}" for i in range(len(rows))
        ]
        assert [r["titles"][0]["title"] for r in records] == [
            p for _, p in rows
        ]

    code, out, err = generate_main(
        capsys,
        monkeypatch,
        [tiny_run, "--beams", "3", "--nbest", "3"],
        stdin="\n".join(ODD_LINES) + "\n",
    )
    assert code == 0, err
    titles = tsv_titles(out)
    assert sorted(titles) == list(range(1, len(ODD_LINES) + 1))


@pytest.mark.slow
def test_sampling_is_seeded(tiny_run, tiny_predictions, capsys, monkeypatch):
    stdin = "".join(f"{s}\n" for s, _ in tiny_predictions[1][:6])
    argv = [tiny_run, "--sample", "-n", "3", "--topk", "5", "--seed", "7"]
    runs = [
        generate_main(capsys, monkeypatch, [*argv, "--format", "jsonl"], stdin)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    code, out, err = runs[0]
    assert code == 0, err
    for line in out.splitlines():
        titles = json.loads(line)["titles"]
        assert len(titles) == 3
        assert all(t["score"] is None for t in titles)


@pytest.mark.slow
def test_a_model_directory_titles_as_its_run(
    tiny_run, tiny_predictions, tmp_path, capsys, monkeypatch
):
    """config.json, vocab.txt and a checkpoint: the run's model saved as
    a model directory decodes the run's titles (with its lengths)."""
    from tasks.lib.run_diagnostics import check_run_dir
    from tasks.lib.run_diagnostics import rebuild

    run = rebuild(*check_run_dir(tiny_run))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    run.model.bert_config.save(model_dir / "config.json")
    shutil.copy(tiny_run / "vocab.txt", model_dir / "vocab.txt")
    shutil.copy(tiny_run / "best.weights.h5", model_dir / "model.weights.h5")
    rows = tiny_predictions[1][:16]
    stdin = "".join(f"{s}\n" for s, _ in rows)
    lengths = ["--maxlen", "64", "--title-maxlen", "12"]
    code, out, err = generate_main(
        capsys, monkeypatch, [model_dir, *lengths], stdin
    )
    assert code == 0, err
    titles = tsv_titles(out)
    assert [titles[i + 1][0][2] for i in range(len(rows))] == [
        p for _, p in rows
    ]
    # A run decodes with its own lengths.
    code, _, err = generate_main(
        capsys, monkeypatch, [tiny_run, *lengths], stdin
    )
    assert "a run decodes with its own --maxlen" in one_line_error(code, err)
