"""End to end: tasks/csl_title.py on real CSL pairs with a tiny model."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from data.vocab import SPECIAL_TOKENS
from models.strategies import STRATEGIES
from tests.common import ROOT
from tests.common import TINY_TASK_ARGS
from tests.common import VOCAB_DIR
from tests.common import backends_in_turn

SCRIPT = ROOT / "tasks" / "csl_title.py"


def task_command(csl_dev_path, out, *extra):
    return [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(csl_dev_path),
        "--vocab",
        str(VOCAB_DIR / "vocab.txt"),
        "--out",
        str(out),
        *TINY_TASK_ARGS,
        *extra,
    ]


def run_task(command, **kwargs):
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
        **kwargs,
    )


# Each strategy's step is tested in-process under both backends
# (tests/models/test_strategies.py); end to end, each runs once.
EVERY_STRATEGY = backends_in_turn(
    sorted(STRATEGIES), "its step is tested in-process on both backends"
)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", EVERY_STRATEGY)
def test_every_strategy_runs_end_to_end(strategy, csl_dev_path, tmp_path):
    out = tmp_path / strategy
    result = run_task(
        task_command(
            csl_dev_path,
            out,
            "--strategy",
            strategy,
            "--limit",
            "40",
            "--epochs",
            "1",
            "--beams",
            "1",
            "2",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["strategy"] == strategy
    assert set(results["test"]) == {"1", "2"}
    for metrics in results["test"].values():
        for name in ("rouge-1", "rouge-2", "rouge-l", "bleu"):
            assert 0.0 <= metrics[name] <= 1.0
        assert metrics["titles"] == 4
    assert results["data"]["train"]["sha256"]
    lines = (out / "predictions-beam2.tsv").read_text("utf-8").splitlines()
    assert lines[0] == "source\treference\tprediction" and len(lines) == 5
    assert (out / "best.weights.h5").exists()
    assert not list(out.glob("*tmp*")), "a temporary file was left behind"


@pytest.mark.slow
def test_killed_run_resumes_after_last_finished_epoch(csl_dev_path, tmp_path):
    out = tmp_path / "run"
    command = task_command(
        csl_dev_path, out, "--limit", "160", "--epochs", "3", "--beams", "1"
    )
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state_path = out / "state.json"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if state_path.exists():
            state = json.loads(state_path.read_text("utf-8"))
            if state["epochs_done"] == 1:
                break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted = json.loads(state_path.read_text("utf-8"))
    assert interrupted["epochs_done"] in (1, 2)
    assert not (out / "results.json").exists()

    result = run_task(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"after epoch {interrupted['epochs_done']}" in result.stdout
    results = json.loads((out / "results.json").read_text("utf-8"))
    history = results["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert history[0] == interrupted["history"][0]
    assert not list(out.glob("*tmp*"))
    assert len(list(out.glob("epoch-*.weights.h5"))) == 1


RUN_OPTIONS = [
    "--ema",
    "0.9",
    "--label-smoothing",
    "0.1",
    "--length-penalty",
    "1.0",
    "--min-length",
    "2",
]


@pytest.mark.slow
def test_run_options_end_to_end_and_resumed_exactly(csl_dev_path, tmp_path):
    """--ema, --label-smoothing, --length-penalty and --min-length reach
    results.json; two epochs in one go equal one epoch, then a resumed
    second (the weight averages travel with the checkpoint)."""

    def command(out, epochs):
        return task_command(
            csl_dev_path,
            out,
            "--limit",
            "40",
            "--epochs",
            str(epochs),
            "--beams",
            "2",
            *RUN_OPTIONS,
        )

    straight = run_task(command(tmp_path / "straight", 2))
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = run_task(command(tmp_path / "resumed", 1))
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_task(command(tmp_path / "resumed", 2))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "after epoch 1" in second.stdout
    results = [
        json.loads((tmp_path / name / "results.json").read_text("utf-8"))
        for name in ("straight", "resumed")
    ]
    assert results[0]["options"] == {
        "label_smoothing": 0.1,
        "ema": 0.9,
        "length_penalty": 1.0,
        "min_length": 2,
    }
    assert results[0]["best_epoch"] == results[1]["best_epoch"]
    # JAX's resumed steps differ from uninterrupted ones in the last
    # float32 digits (without --ema too), hence approx. Averages that were
    # not restored would change the validation scores far more.
    drop = ("seconds", "decode_seconds", "step_seconds")
    straight, resumed = (
        _numbers({key: run[key] for key in ("history", "test")}, drop)
        for run in results
    )
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert resumed[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def _numbers(value, skip, path=""):
    """{path: number} of every number in `value`, except keys in `skip`."""
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if k not in skip]
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return {path: value}
    found = {}
    for key, item in items:
        found.update(_numbers(item, skip, f"{path}/{key}"))
    return found


@pytest.mark.parametrize(
    "option, value",
    [
        ("--ema", "1.5"),
        ("--label-smoothing", "1"),
        ("--min-length", "0"),
    ],
)
def test_bad_run_options_are_clear_errors(option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        run_main(["--out", str(tmp_path / "o"), option, value])
    assert option in str(raised.value.code) + capsys.readouterr().err


SPLITS = ("train", "valid", "test")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "empty file"),
        ("标题\t内容\n只有一列\n", ":2:"),
        ("\t内容\n", ":1:"),
    ],
)
def test_bad_data_is_one_clear_error(content, expected, tmp_path, capsys):
    data = write(tmp_path / "pairs.tsv", content)
    vocab = write(
        tmp_path / "vocab.txt",
        "".join(f"{t}\n" for t in [*SPECIAL_TOKENS, *"标题内容"]),
    )
    argv = ["--data", str(data), "--vocab", str(vocab)]
    with pytest.raises(SystemExit) as raised:
        run_main([*argv, "--out", str(tmp_path / "o"), *TINY_TASK_ARGS])
    stderr = capsys.readouterr().err
    assert raised.value.code == 2
    assert expected in stderr and str(data) in stderr


def test_missing_model_files_are_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        run_main(["--model-dir", str(tmp_path / "nowhere")])
    assert raised.value.code != 0
    assert "nowhere" in str(raised.value.code) + capsys.readouterr().err


def run_main(argv):
    """csl_title.py's `main` in this process (errors exit before any
    training, so a subprocess would only add its start-up time)."""
    from tasks.csl_title import DEFAULTS
    from tasks.lib.seq2seq import main

    return main(argv, "csl_title", "test", DEFAULTS)


def test_help_lists_strategies():
    result = run_task([sys.executable, str(SCRIPT), "--help"])
    assert result.returncode == 0
    for name in STRATEGIES:
        assert name in result.stdout
    assert "(default: 256)" in result.stdout


@pytest.mark.slow
def test_built_in_default_runs_without_model_or_data(tmp_path):
    """The README's first command: no model, no data, no ../shared."""
    out = tmp_path / "default"
    result = run_task(
        [
            sys.executable,
            str(SCRIPT),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--beams",
            "1",
            "--no-progress",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "built-in tiny default" in result.stdout
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["data"]["train"]["path"].startswith("synthetic")
    assert results["test"]["1"]["titles"] == 120
    assert (out / "vocab.txt").exists()
    # What the run says it did is what it did.
    pairs = {name: results["data"][name]["pairs"] for name in SPLITS}
    assert pairs == {"train": 960, "valid": 120, "test": 120}
    environment = results["environment"]
    assert environment["backend"] == keras.backend.backend()
    assert environment["precision"] == "fp32"
    assert results["strategy_options"] == {}  # baseline has none
    # Its output reads cleanly: a summary first, epochs counted, no
    # start-up chatter or harmless-but-alarming notices.
    for line in ("Device:", "Model:", "Data:", "Strategy: baseline"):
        assert line in result.stdout
    assert "train 960, valid 120, test 120 pairs" in result.stdout
    assert "Epoch 1/1" in result.stdout
    for noise in ("oneDNN", "absl", "shuffle=True", "ran out of data"):
        assert noise not in result.stdout + result.stderr


def test_results_record_every_strategy_option(tmp_path, monkeypatch):
    """Defaults included; the options given are kept apart for labels."""
    from tasks.lib.seq2seq_options import build_parser
    from tasks.lib.strategy_options import given_options
    from tasks.lib.strategy_options import make_strategy
    from tasks.lib.strategy_options import strategy_options

    argv = ["--strategy", "replace", "--strategy-option", "token_rate=1"]
    args = build_parser("t", {"maxlen": 64, "title_maxlen": 8}).parse_args(argv)
    strategy = make_strategy(args.strategy, args.strategy_option)
    assert strategy_options(strategy) == {
        "sample_rate": 0.5,
        "token_rate": 1.0,
        "pool": "sequence",
    }
    assert given_options(strategy, args) == {"token_rate": 1.0}


def test_known_model_without_files_says_where_to_get_them(capsys):
    from tasks.lib.model_files import check_known_model

    with pytest.raises(SystemExit, match="huggingface.co/hfl/chinese-bert-wwm"):
        check_known_model("chinese_wwm_L-12_H-768_A-12", None)


def test_known_model_directory_is_checked(tmp_path, capsys):
    from tasks.lib.model_files import check_known_model

    name = "chinese_wwm_L-12_H-768_A-12"
    with pytest.raises(SystemExit, match="lacks pytorch_model.bin"):
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "vocab.txt").write_text("[PAD]\n")
        check_known_model(name, tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"weights")
    digests = check_known_model(name, tmp_path)
    assert digests["vocab.txt"] == hashlib.sha256(b"[PAD]\n").hexdigest()
    assert f"{name}: pytorch_model.bin sha256" in capsys.readouterr().out


def iterations(path):
    """The step counter of an optimizer saved in `path`: its first
    integer scalar (Keras optimizers keep `iterations` first)."""
    import numpy as np

    with np.load(path) as values:
        for name in values.files:
            value = values[name]
            if value.shape == () and value.dtype.kind in "iu":
                return int(value)
    raise AssertionError(f"{path}: no step counter")


@pytest.mark.slow
def test_professor_resumes_with_its_discriminator(csl_dev_path, tmp_path):
    """A professor run continued with more epochs restores D and its
    optimizer: D's step counter counts the steps of both runs."""
    out = tmp_path / "professor"
    command = task_command(
        csl_dev_path,
        out,
        "--strategy",
        "professor",
        "--strategy-option",
        "every=2",
        "--strategy-option",
        "free_run=sample",
        "--limit",
        "60",
        "--beams",
        "1",
    )
    result = run_task([*command, "--epochs", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    first = iterations(out / "epoch-1.strategy.npz")
    assert first == (iterations(out / "epoch-1.optimizer.npz") + 1) // 2

    result = run_task([*command, "--epochs", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "after epoch 1" in result.stdout
    assert not (out / "epoch-1.strategy.npz").exists()
    steps = iterations(out / "epoch-2.optimizer.npz")
    assert iterations(out / "epoch-2.strategy.npz") == (steps + 1) // 2 > first
    results = json.loads((out / "results.json").read_text("utf-8"))
    given = {"every": 2, "free_run": "sample"}
    assert results["strategy_options_given"] == given
    options = results["strategy_options"]
    assert options.items() >= given.items() and options["warmup"] == 0
    for entry in results["history"]:
        figures = entry["train"]
        assert 0.0 <= figures["disc_accuracy"] <= 1.0
        assert figures["disc_loss"] > 0.0 and figures["adversarial"] > 0.0
        assert figures["loss"] > figures["ce"]


@pytest.mark.slow
def test_half_written_state_resumes_from_the_last_good_epoch(
    csl_dev_path, tmp_path
):
    """A crash (or a full disk) cut state.json short after epoch 1: the
    run goes on from the copy kept with epoch 1's checkpoint."""
    out = tmp_path / "run"
    first = task_command(
        csl_dev_path, out, "--limit", "40", "--epochs", "1", "--beams", "1"
    )
    assert run_task(first).returncode == 0
    state = out / "state.json"
    state.write_bytes(state.read_bytes()[:40])
    again = run_task(first[:-4] + ["--epochs", "2", "--beams", "1"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert "state.json is damaged; resuming from epoch-1" in again.stdout
    assert "after epoch 1" in again.stdout
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]
