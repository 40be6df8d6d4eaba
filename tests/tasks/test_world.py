"""Real runs when the world misbehaves: two processes on one run folder, a
loss that diverges, a full disk, SIGINT and SIGTERM mid-training, and odd
text. Each case is provoked for real and checked by what the user sees
(one line, the exit status), by the files left behind (each parses or
loads) and by the same command run again."""

import json
import re
import resource
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests.common import CSL_CORPUS
from tests.common import ROOT
from tests.common import TINY_TASK_ARGS
from tests.common import VOCAB_DIR
from tests.common import require_shared

SCRIPT = ROOT / "tasks" / "csl_title.py"
# The built-in tiny default: a small random model on synthetic pairs.
TINY = ["--no-progress", "--beams", "1"]


def command(out, *extra):
    return [sys.executable, str(SCRIPT), "--out", str(out), *TINY, *extra]


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)


# A line TensorFlow's C++ logs (glog format: 'E0000 00:00:17.. util.cc:131]
# oneDNN supports DT_INT64 only...'), and the indented lines it adds.
CPP_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+ |\t)")


def error_lines(result):
    """stderr's lines, warnings and TensorFlow's C++ logs aside."""
    return [
        line
        for line in result.stderr.splitlines()
        if line.strip()
        and not line.startswith("warning: ")
        and not CPP_LOG.match(line)
    ]


def strict_json(path):
    """A JSON file that must hold no NaN or infinity (not JSON)."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text("utf-8"), parse_constant=refuse)


def check_left_behind(out):
    """No temporary file; every JSON file parses, every weights file
    loads."""
    assert not list(out.glob("*tmp*")), sorted(out.iterdir())
    for path in out.glob("*.json"):
        strict_json(path)
    for path in out.glob("*.weights.h5"):
        with h5py.File(path, "r") as handle:
            assert len(handle.keys())
    for path in out.glob("*.npz"):
        with np.load(path) as values:
            assert all(values[name] is not None for name in values.files)


def wait_for(process, ready, timeout=600):
    """Poll until `ready()`; the process must still be running then."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"ended ({process.returncode}) before it was ready")


def epochs_done(out):
    path = out / "state.json"
    return path.exists() and strict_json(path)["epochs_done"] >= 1


@pytest.mark.slow
@pytest.mark.one_backend(
    "jax",
    reason="the lock is Python; a killed run resumes on both backends in "
    "test_csl_title.py",
)
def test_a_second_process_is_refused_and_a_killed_ones_folder_resumed(
    tmp_path,
):
    out = tmp_path / "run"
    # Long enough to outlast the second process's start; it is killed.
    argv = command(out, "--epochs", "30")
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_for(first, lambda: epochs_done(out))
        second = run(argv)
        assert second.returncode == 2
        assert error_lines(second) == [
            f"csl_title.py: error: --out {out} is in use by another run "
            f"(process {first.pid}); wait for it to end, or give another --out"
        ]
        assert first.poll() is None, "the refused run disturbed the first"
    finally:
        first.kill()
        first.wait()
    done = strict_json(out / "state.json")["epochs_done"]
    # Fewer epochs may be asked for on resuming: it only tests.
    resumed = run(command(out, "--epochs", "1"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming {out} after epoch {done}" in resumed.stdout
    assert len(strict_json(out / "results.json")["history"]) == done
    # kill -9 may strike mid-write: the new owner clears what it left.
    check_left_behind(out)


@pytest.mark.slow
def test_a_diverging_run_stops_clearly_and_is_recorded(tmp_path):
    out = tmp_path / "run"
    argv = command(out, "--epochs", "2", "--lr", "1e6")
    result = run(argv)
    assert result.returncode == 3, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("csl_title.py: error: training diverged at epoch 1")
    assert "step" in line and "lower --lr" in line
    results = strict_json(out / "results.json")
    assert results["diverged"]["epoch"] == 1
    assert results["diverged"]["loss"] in ("nan", "inf")
    assert "test" not in results
    # Nothing of the diverged epoch was saved: no checkpoint, no best.
    assert not list(out.glob("*.weights.h5"))
    check_left_behind(out)
    again = run(argv)
    assert again.returncode == 3
    (line,) = error_lines(again)
    assert f"--out {out} holds a run that diverged (epoch 1, step" in line


def pretrain_command(out, *extra):
    """A one-layer pretraining on the real CSL titles; `extra` last."""
    return [
        sys.executable,
        str(ROOT / "tasks" / "pretrain.py"),
        "--vocab",
        str(require_shared(VOCAB_DIR / "vocab.txt")),
        "--text",
        str(require_shared(CSL_CORPUS / "titles.txt")),
        "--limit",
        "200",
        "--layers",
        "1",
        "--hidden",
        "16",
        "--heads",
        "2",
        "--intermediate",
        "16",
        "--seq-len",
        "32",
        "--no-progress",
        "--warmup",
        "0",
        "--checkpoint-every",
        "2",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_a_diverging_pretraining_keeps_its_last_checkpoint(tmp_path):
    out = tmp_path / "pretrain"
    argv = pretrain_command(out, "--steps", "8", "--lr", "1e6")
    result = run(argv)
    assert result.returncode == 3, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert "pretrain.py: error: training diverged at step" in line
    assert "is kept" in line and "--warmup" in line
    details = strict_json(out / "diverged.json")
    state = strict_json(out / "state.json")
    assert state["step"] < details["step"]
    assert (out / state["checkpoint"]["weights"]).is_file()
    assert not (out / "model").exists()
    check_left_behind(out)
    again = run(argv)
    assert again.returncode == 3
    assert "holds a run that diverged" in error_lines(again)[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 7 MiB file system: the tiny default's first epoch fits (weights,
    best weights, optimizer), the second does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(disk)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes_after(small_disk):
    out = small_disk / "run"
    argv = command(out, "--epochs", "2")
    result = run(argv)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert line.startswith(f"csl_title.py: error: {out}/")
    assert "No space left on device" in line
    state = strict_json(out / "state.json")
    assert state["epochs_done"] == 1
    check_left_behind(out)
    subprocess.run(
        ["mount", "-o", "remount,size=64m", str(small_disk)], check=True
    )
    resumed = run(argv)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout and "after epoch 1" in resumed.stdout
    assert len(strict_json(out / "results.json")["history"]) == 2


def limit_file_size():
    """In the child: files may not grow past 2 MiB (EFBIG, as a full disk
    gives ENOSPC), without the signal that would kill the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))


@pytest.mark.slow
def test_a_write_that_fails_keeps_the_last_checkpoint(tmp_path):
    """Without root (no tmpfs): a file-size limit makes the second epoch's
    optimizer state (about 2.9 MB) fail to write."""
    out = tmp_path / "run"
    first = run(command(out, "--epochs", "1"))
    assert first.returncode == 0, first.stderr[-2000:]
    argv = command(out, "--epochs", "2")
    limited = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=limit_file_size,
    )
    assert limited.returncode == 2, limited.stderr[-2000:]
    (line,) = error_lines(limited)
    assert line.startswith(f"csl_title.py: error: {out}/epoch-2.optimizer")
    assert "File too large" in line
    assert strict_json(out / "state.json")["epochs_done"] == 1
    check_left_behind(out)
    resumed = run(argv)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "after epoch 1" in resumed.stdout
    assert len(strict_json(out / "results.json")["history"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_a_signal_mid_training_leaves_a_resumable_run(signum, status, tmp_path):
    out = tmp_path / "run"
    argv = command(out, "--epochs", "3")
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(process, lambda: epochs_done(out))
    process.send_signal(signum)
    _, process.stderr = process.communicate(timeout=120)
    stderr = process.stderr
    assert process.returncode == status, stderr[-2000:]
    assert error_lines(process)[-1] == (
        f"Interrupted ({signal.Signals(signum).name}): run the same command "
        "again to resume after the last finished checkpoint."
    )
    assert "Traceback" not in stderr
    check_left_behind(out)
    assert not (out / ".lock").exists()
    resumed = run(argv)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming" in resumed.stdout
    results = strict_json(out / "results.json")
    assert [entry["epoch"] for entry in results["history"]] == [1, 2, 3]
    # Titles that collapsed are warned of for the test set too, and
    # recorded.
    warned = "test beam 1 predictions collapsed" in resumed.stderr
    assert results["test"]["1"]["collapsed"] is warned
    # Run again: finished, it says where its results are and decodes
    # nothing.
    again = run(argv)
    assert again.returncode == 0
    assert f"{out}: this run is finished" in again.stdout
    assert "decoding" not in again.stderr + again.stdout


@pytest.mark.slow
def test_a_signal_mid_pretraining_leaves_a_resumable_run(tmp_path):
    out = tmp_path / "pretrain"
    argv = pretrain_command(out, "--steps", "300")
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = out / "state.json"
    wait_for(process, lambda: state.exists() and strict_json(state)["step"])
    process.send_signal(signal.SIGTERM)
    _, process.stderr = process.communicate(timeout=120)
    assert process.returncode == 143, process.stderr[-2000:]
    assert error_lines(process)[-1].startswith("Interrupted (SIGTERM)")
    assert "Traceback" not in process.stderr
    stopped_at = strict_json(state)["step"]
    assert 0 < stopped_at < 300
    check_left_behind(out)
    resumed = run(argv)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert strict_json(state)["step"] == 300


# Text as users' files hold it: emoji, zero-width and control characters,
# full-width letters, one character, a title longer than the whole length
# budget.
ODD_PAIRS = [
    ("😀标题🎉", "摘要里有表情😀和符号🎉。"),
    ("零\u200b宽\u200d字", "正文\u200b含\ufeff零宽\u200c字符。"),
    ("控\x07制\x1b符", "内容\x00有\x01控制\x7f字符\x1c和\u2028分隔。"),
    ("ＡＢＣ全角", "全角字母ＡＢＣ１２３和标点，。"),
    ("一", "二"),
    ("长" * 300, "短摘要。"),
]


def write_odd_pairs(path, copies=1):
    lines = [f"{title}\t{content}\n" for title, content in ODD_PAIRS]
    path.write_text("".join(lines * copies), encoding="utf-8")
    return path


def test_odd_text_reads_encodes_batches_and_scores(vocab_path, tmp_path):
    from data import Seq2SeqBatches
    from data import Tokenizer
    from data import load_vocab
    from data import read_pairs
    from data.vocab import SEQ2SEQ_TOKENS
    from tasks.lib.evaluation import write_predictions
    from tasks.lib.metrics import score_titles
    from tasks.lib.runs import read_predictions

    pairs = read_pairs(str(write_odd_pairs(tmp_path / "odd.tsv")))
    assert [title for title, _ in pairs] == [t for t, _ in ODD_PAIRS]
    token_dict, _ = load_vocab(
        vocab_path, simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    for title, content in pairs:
        ids, segments = tokenizer.encode(content, title, maxlen=32)
        assert len(ids) == len(segments) <= 32
        assert tokenizer.decode(ids)
    batches = Seq2SeqBatches(pairs, tokenizer, maxlen=32, batch_size=4)
    assert sum(len(batches[i][0][0]) for i in range(len(batches))) == 6
    titles = [title for title, _ in pairs]
    assert score_titles(titles, titles)["rouge-l"] == pytest.approx(1.0)
    odd = ["", "\u200b", "\x07", "😀", "Ａ", "x"]
    scores = score_titles(odd, titles)
    assert all(0 <= value < 1 for value in scores.values())
    path = tmp_path / "predictions-beam1.tsv"
    write_predictions(path, pairs, odd)
    rows = read_predictions(path)
    assert len(rows) == len(pairs)
    assert all(None not in row for row in rows)


@pytest.mark.slow
def test_odd_text_trains_decodes_and_scores(vocab_path, tmp_path):
    out = tmp_path / "run"
    data = write_odd_pairs(tmp_path / "odd.tsv", copies=8)
    argv = [
        sys.executable,
        str(SCRIPT),
        "--data",
        str(data),
        "--vocab",
        str(vocab_path),
        "--out",
        str(out),
        *TINY_TASK_ARGS,
        "--epochs",
        "1",
        "--beams",
        "1",
        "2",
        "--no-progress",
    ]
    result = run(argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert error_lines(result) == []
    results = strict_json(out / "results.json")
    assert set(results["test"]) == {"1", "2"}
    for beam in (1, 2):
        lines = (out / f"predictions-beam{beam}.tsv").read_text("utf-8")
        rows = lines.splitlines()
        assert len(rows) == 1 + results["data"]["test"]["pairs"]
        assert all(row.count("\t") == 2 for row in rows)
    check_left_behind(out)
