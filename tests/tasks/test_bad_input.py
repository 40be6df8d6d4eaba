"""Every bad input a user can give the scripts, in one table.

Each row runs a script's `main` in this process (errors come before any
training, so a subprocess would only add its start-up time) and checks what
the user sees: a non-zero exit, exactly one line on stderr, no traceback,
the culprit named (file and line, option, value) with what was expected,
and no file of a run written.
"""

import json
import os

import pytest

from data import synthetic
from tests.checkpoints import tiny_arrays
from tests.common import TINY
from tests.common import TINY_TASK_ARGS
from weights.formats import write_safetensors

# A tiny seq2seq run: fails fast if a bad input slipped through.
QUICK = [*TINY_TASK_ARGS, "--epochs", "1", "--beams", "1"]
# Within the tiny checkpoint's 64 positions.
MODEL_LENGTHS = ["--maxlen", "48", "--title-maxlen", "8"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good and broken files, made once: pairs, vocabularies, model
    directories (tiny random checkpoint), corpora, run folders."""
    root = tmp_path_factory.mktemp("world")
    pairs = "".join(f"标题{i}\t内容是第{i}个。\n" for i in range(40))
    (root / "pairs.tsv").write_text(pairs, encoding="utf-8")
    (root / "three.tsv").write_text(
        "".join(pairs.splitlines(True)[:3]), encoding="utf-8"
    )
    (root / "bad-line.tsv").write_text(
        "标题\t内容\n只有一列\n", encoding="utf-8"
    )
    vocab = synthetic.write_vocab(root / "vocab.txt")
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    (model / "vocab.txt").write_bytes(vocab.read_bytes())
    write_safetensors(tiny_arrays(), model / "model.safetensors")
    _variant(model, root / "cut", cut="model.safetensors")
    _variant(model, root / "badjson", config="{\n  'hidden_size': 32,\n")
    _variant(
        model, root / "badsize", config=json.dumps({**TINY, "hidden_size": -4})
    )
    _variant(
        model, root / "wider", config=json.dumps({**TINY, "hidden_size": 64})
    )
    _variant(model, root / "noconfig", remove="config.json")
    _variant(model, root / "novocab", remove="vocab.txt")
    mt5 = json.dumps({"model_type": "mt5", "d_model": 16})
    _variant(model, root / "mt5", config=mt5, remove="vocab.txt")
    big = _variant(model, root / "bigvocab")
    extra = [chr(0x9F00 + i) for i in range(150)]
    with open(big / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("\n".join(extra) + "\n")
    (root / "weights.xyz").write_bytes(b"not a checkpoint")
    (root / "blank.txt").write_text("\n  \n\n", encoding="utf-8")
    (root / "text.txt").write_text("一段文字。\n" * 5, encoding="utf-8")
    (root / "not-a-run").mkdir()
    broken = root / "broken-run"
    broken.mkdir()
    (broken / "results.json").write_text('{"strategy": "gp",\n "seed":')
    other = root / "other-run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"lr": 0.5}))
    (root / "a-file").write_text("")
    return root


def _variant(model, target, config=None, cut=None, remove=None):
    target.mkdir()
    for path in model.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    if config is not None:
        (target / "config.json").write_text(config)
    if cut:
        data = (target / cut).read_bytes()
        (target / cut).write_bytes(data[: len(data) // 2])
    if remove:
        (target / remove).unlink()
    return target


def seq2seq(*argv):
    return ("seq2seq", argv)


def pretrain(*argv):
    return ("pretrain", argv)


def compare(*argv):
    return ("compare", argv)


def benchmark(*argv):
    return ("benchmark", argv)


def diagnose(*argv):
    return ("diagnose", argv)


def convert(source, output="{out}/out.safetensors", *argv):
    return ("convert", (source, output, *argv))


def run_script(script, argv, out):
    """The script's `main` as `python tasks/NAME.py ARGV` runs it."""
    from tasks.lib.cli import run_main

    if script == "seq2seq":
        from tasks.csl_title import DEFAULTS
        from tasks.lib.seq2seq import main

        argv = [*QUICK, *argv]
        if "--out" not in argv:
            argv += ["--out", str(out)]
        return main(argv, "csl_title", "t", DEFAULTS)
    if script == "pretrain":
        from tasks.pretrain import main

        base = ["--steps", "2", "--layers", "1", "--hidden", "16"]
        base += ["--heads", "2", "--intermediate", "16", "--seq-len", "32"]
        return main([*base, *argv, "--out", str(out)])
    if script == "compare":
        from tasks import compare as module

        return run_main(module.main, [*argv, "--out", str(out)])
    if script == "benchmark":
        from tasks import benchmark as module

        return run_main(module.main, list(argv))
    if script == "diagnose":
        from tasks.diagnose import main

        return main([*argv, "--out", str(out)])
    from weights.convert import main

    out.mkdir()
    return main(list(argv))


# (script call, what the line must name: each string, {w} = the world)
CASES = {
    # Options: ranges and combinations.
    "beams 0": (seq2seq("--beams", "0"), ["--beams 0", "1 or more"]),
    "batch 0": (seq2seq("--batch-size", "0"), ["--batch-size 0"]),
    "batch abc": (seq2seq("--batch-size", "abc"), ["--batch-size", "'abc'"]),
    "epochs 0": (seq2seq("--epochs", "0"), ["--epochs 0"]),
    "lr 0": (seq2seq("--lr", "0"), ["--lr 0.0", "above 0"]),
    "eval batch": (seq2seq("--eval-batch-size", "0"), ["--eval-batch-size"]),
    "valid limit": (seq2seq("--valid-limit", "0"), ["--valid-limit 0"]),
    "limit": (seq2seq("--limit", "-2"), ["--limit -2"]),
    "seed": (seq2seq("--seed", "-1"), ["--seed -1"]),
    "dropout": (seq2seq("--dropout", "1"), ["--dropout 1.0"]),
    "warm-up": (seq2seq("--warmup-steps", "-5"), ["--warmup-steps -5"]),
    "heads": (seq2seq("--heads", "3"), ["--hidden 32", "--heads 3"]),
    "maxlen": (
        seq2seq("--maxlen", "10", "--title-maxlen", "8"),
        ["--maxlen 10", "--title-maxlen 8", "at least 11"],
    ),
    "strategy": (seq2seq("--strategy", "replac"), ["'replac'", "replace"]),
    "precision": (seq2seq("--precision", "fp8"), ["--precision", "fp8"]),
    # Strategy options.
    "option typo": (
        seq2seq("--strategy", "replace", "--strategy-option", "tokn_rate=0.3"),
        ["tokn_rate", "token_rate (float, default 0.3)", "sample_rate"],
    ),
    "option type": (
        seq2seq("--strategy", "replace", "--strategy-option", "token_rate=x"),
        ["token_rate=x", "expected float"],
    ),
    "option range": (
        seq2seq("--strategy", "replace", "--strategy-option", "token_rate=2"),
        ["token_rate=2.0", "[0, 1]"],
    ),
    "option form": (
        seq2seq("--strategy", "gp", "--strategy-option", "epsilon"),
        ["'epsilon'", "KEY=VALUE"],
    ),
    "baseline option": (
        seq2seq("--strategy-option", "epsilon=1"),
        ["epsilon", "baseline has no option", "none"],
    ),
    # Data files and splits.
    "data missing": (seq2seq("--data", "{w}/nope.tsv"), ["nope.tsv"]),
    "data line": (
        seq2seq("--data", "{w}/bad-line.tsv", "--vocab", "{w}/vocab.txt"),
        ["bad-line.tsv:2"],
    ),
    "split empty": (
        seq2seq("--data", "{w}/three.tsv", "--vocab", "{w}/vocab.txt"),
        ["three.tsv", "no valid pairs", "--valid-fraction 0.1"],
    ),
    "fractions": (
        seq2seq(
            "--data",
            "{w}/pairs.tsv",
            "--valid-fraction",
            "0.6",
            "--test-fraction",
            "0.5",
        ),
        ["--valid-fraction 0.6", "--test-fraction 0.5", "below 1"],
    ),
    "train alone": (seq2seq("--train", "{w}/pairs.tsv"), ["--train needs"]),
    "data and train": (
        seq2seq("--data", "{w}/pairs.tsv", "--train", "{w}/pairs.tsv"),
        ["--data", "--train"],
    ),
    "vocab missing": (
        seq2seq("--data", "{w}/pairs.tsv", "--vocab", "{w}/nope.txt"),
        ["--vocab", "nope.txt"],
    ),
    "data a directory": (
        seq2seq("--data", "{w}/not-a-run"),
        ["--data {w}/not-a-run: a directory; expected a file"],
    ),
    # The model directory.
    "model dir": (seq2seq("--model-dir", "{w}/nowhere"), ["nowhere"]),
    # An mT5 directory's vocabulary is its SentencePiece model.
    "model dir mt5": (
        seq2seq("--model-dir", "{w}/mt5"),
        ["--model-dir {w}/mt5: no spiece.model in it"],
    ),
    "no vocab in model dir": (
        seq2seq("--model-dir", "{w}/novocab"),
        ["--model-dir {w}/novocab: no vocab.txt in it"],
    ),
    "no config": (
        seq2seq("--model-dir", "{w}/noconfig"),
        ["noconfig", "config.json"],
    ),
    "config json": (
        seq2seq("--model-dir", "{w}/badjson", *MODEL_LENGTHS),
        ["badjson/config.json:2", "JSON"],
    ),
    "config size": (
        seq2seq("--model-dir", "{w}/badsize", *MODEL_LENGTHS),
        ["badsize/config.json", "hidden_size"],
    ),
    "checkpoint cut": (
        seq2seq("--model-dir", "{w}/cut", *MODEL_LENGTHS),
        ["cut/model.safetensors", "cut short"],
    ),
    "config vs checkpoint": (
        seq2seq("--model-dir", "{w}/wider", *MODEL_LENGTHS),
        ["wider/model.safetensors", "checkpoint has (60, 32), model expects"],
    ),
    "vocab too big": (
        seq2seq("--model-dir", "{w}/bigvocab", "--no-simplify", *MODEL_LENGTHS),
        ["bigvocab/vocab.txt", "embedding table of 128 rows"],
    ),
    "unknown format": (
        seq2seq(
            "--config",
            "{w}/model/config.json",
            "--checkpoint",
            "{w}/weights.xyz",
            "--vocab",
            "{w}/vocab.txt",
        ),
        ["weights.xyz", "unknown checkpoint format", ".safetensors"],
    ),
    "positions": (
        seq2seq("--model-dir", "{w}/model"),
        ["--maxlen 96", "64 positions", "max_position_embeddings"],
    ),
    # The run directory.
    "out is a file": (seq2seq("--out", "{w}/a-file"), ["a-file"]),
    "out of another run": (
        seq2seq("--out", "{w}/other-run"),
        ["other-run", "other settings", "lr: 0.5 -> 0.001"],
    ),
    # pretrain.py
    "empty corpus": (
        pretrain("--text", "{w}/blank.txt", "--vocab", "{w}/vocab.txt"),
        ["blank.txt", "no documents"],
    ),
    "corpus missing": (
        pretrain("--text", "{w}/nope.txt", "--vocab", "{w}/vocab.txt"),
        ["--text", "nope.txt"],
    ),
    "text a directory": (
        pretrain("--text", "{w}/not-a-run", "--vocab", "{w}/vocab.txt"),
        ["--text {w}/not-a-run: a directory; expected a file"],
    ),
    "steps 0": (
        pretrain("--text", "{w}/text.txt", "--steps", "0"),
        ["--steps 0"],
    ),
    "target len": (
        pretrain(
            "--text",
            "{w}/text.txt",
            "--objective",
            "unilm",
            "--target-len",
            "40",
        ),
        ["--target-len 40", "--seq-len 32", "at most 28"],
    ),
    "mask rate": (
        pretrain("--text", "{w}/text.txt", "--mask-rate", "1.5"),
        ["--mask-rate 1.5"],
    ),
    "init missing": (
        pretrain("--text", "{w}/text.txt", "--init", "{w}/nowhere"),
        ["--init", "nowhere"],
    ),
    "no vocab": (pretrain("--text", "{w}/text.txt"), ["--vocab"]),
    # compare.py
    "not a run": (
        compare("{w}/not-a-run"),
        ["not-a-run", "not a finished run"],
    ),
    "broken results": (
        compare("{w}/broken-run"),
        ["broken-run/results.json:2", "JSON"],
    ),
    "compare strategy": (
        compare("--run", "--strategies", "baseline", "replac"),
        ["--strategies replac", "unknown strategy"],
    ),
    "compare seeds": (compare("--run", "--seeds", "-1"), ["--seeds -1"]),
    # benchmark.py
    "decode n": (benchmark("decode", "--n", "0"), ["--n 0"]),
    "decode positions": (
        benchmark("decode", "--max-positions", "20"),
        ["--max-positions 20", "35 or more"],
    ),
    "decode data": (
        benchmark("decode", "--data", "{w}/nope.tsv"),
        ["--data", "nope.tsv"],
    ),
    "decode nezha peer": (
        benchmark("decode", "--model-type", "nezha", "--peer-n", "2"),
        ["--model-type nezha", "--peer-n", "not in transformers"],
    ),
    "train nezha peer": (
        benchmark("train", "--model-type", "nezha"),
        ["--model-type nezha", "--no-peer", "not in transformers"],
    ),
    "train steps": (benchmark("train", "--steps", "1"), ["--steps 1"]),
    "t5 n": (benchmark("t5", "--n", "0"), ["--n 0"]),
    "train batch": (
        benchmark("train", "--batch-sizes", "16", "0"),
        ["--batch-sizes 0"],
    ),
    "train heads": (
        benchmark("train", "--hidden", "30", "--heads", "4"),
        ["--hidden 30", "--heads 4"],
    ),
    "train strategy option": (
        benchmark("train", "--strategies", "gp:epsilo=1"),
        ["epsilo", "epsilon (float"],
    ),
    "train strategy": (
        benchmark("train", "--strategies", "gq"),
        ["--strategies gq", "unknown strategy"],
    ),
    # diagnose.py
    "diagnose not a run": (diagnose("{w}/not-a-run"), ["not-a-run"]),
    # python -m weights.convert
    "convert missing": (convert("{w}/nope.ckpt"), ["nope.ckpt", "not found"]),
    "convert cut": (
        convert("{w}/cut/model.safetensors"),
        ["cut/model.safetensors", "cut short"],
    ),
    "convert format": (
        convert("{w}/weights.xyz"),
        ["weights.xyz", "unknown checkpoint format"],
    ),
    "convert output": (
        convert("{w}/model", "{out}/out.bin"),
        ["out.bin", ".safetensors"],
    ),
    "convert vocab": (
        convert(
            "{w}/model",
            "{out}/out.safetensors",
            "--keep-tokens-from",
            "{w}/nope.txt",
        ),
        ["--keep-tokens-from", "nope.txt"],
    ),
}


def run_case(script, argv, out, capsys):
    """(exit code, stderr lines, stdout) of one bad call."""
    try:
        code = run_script(script, argv, out)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    if isinstance(code, str):  # SystemExit("message") prints the message
        lines.append(code)
        code = 1
    return code, lines, captured.out


# Cases that build a model first (seconds on JAX): the slow tier.
BUILDS_A_MODEL = {"config vs checkpoint"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow)
        if name in BUILDS_A_MODEL
        else name
        for name in sorted(CASES)
    ],
)
def test_bad_input_is_one_clear_line_before_any_run(
    name, world, tmp_path, capsys
):
    (script, argv), culprits = CASES[name]
    out = tmp_path / "out"
    argv = [
        a.replace("{w}", str(world)).replace("{out}", str(out)) for a in argv
    ]
    before = _listing(world)
    code, lines, stdout = run_case(script, argv, out, capsys)
    assert code not in (0, None), f"exit status {code}: {lines} {stdout}"
    assert len(lines) == 1, lines
    (line,) = lines
    assert "Traceback" not in line and "Traceback" not in stdout
    assert "error" in line
    for culprit in culprits:
        assert culprit.replace("{w}", str(world)) in line, line
    # No file of a run: neither in --out (not even the folder, which only
    # the converter's cases make beforehand) nor beside the inputs.
    if script == "convert":
        assert not any(out.iterdir())
    else:
        assert not out.exists(), sorted(out.iterdir())
    assert _listing(world) == before


def _listing(root):
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    )


@pytest.mark.parametrize("script", ["seq2seq", "pretrain"])
def test_cpu_build_on_a_gpu_machine_is_refused_before_any_run(
    script, world, tmp_path, monkeypatch, capsys
):
    """`nvidia-smi` answers (a stub here) but the backend sees no GPU: one
    line with the install command, unless --allow-cpu."""
    from tasks.lib.environment import GPU_INSTALL
    from tasks.lib.environment import describe_environment

    if describe_environment()["accelerator"] != "cpu":
        pytest.skip("the backend sees an accelerator here")
    stub = tmp_path / "bin" / "nvidia-smi"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100-SXM4-40GB'\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}:{os.environ['PATH']}")
    argv = {
        "seq2seq": [],
        "pretrain": [
            "--text",
            f"{world}/text.txt",
            "--vocab",
            f"{world}/vocab.txt",
        ],
    }[script]
    out = tmp_path / "out"
    code, lines, _ = run_case(script, argv, out, capsys)
    assert code == 2 and len(lines) == 1, lines
    backend = describe_environment()["backend"]
    assert "NVIDIA A100" in lines[0] and GPU_INSTALL[backend] in lines[0]
    assert "--allow-cpu" in lines[0]
    assert not out.exists()
