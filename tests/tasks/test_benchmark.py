"""tasks/benchmark.py (tasks/lib/benchmarks/): the FLOPs formula, the
peer's mask, padding counts and a tiny CPU run."""

import subprocess
import sys

import pytest

from data import Seq2SeqBatches
from data.tokenizer import Tokenizer
from data.vocab import SPECIAL_TOKENS
from tasks.lib.benchmarks.flops import decode_flops
from tasks.lib.benchmarks.flops import mfu
from tasks.lib.benchmarks.flops import peak_matmul_flops
from tasks.lib.benchmarks.flops import train_flops
from tasks.lib.benchmarks.flops import train_shapes
from tasks.lib.benchmarks.padding import PADDING_LAYOUTS
from tasks.lib.benchmarks.padding import padding_rows
from tasks.lib.benchmarks.train import random_batch
from tasks.lib.benchmarks.train import strategy_from_spec
from tests.common import CHARACTERS
from tests.common import ROOT
from tests.common import TINY_BENCHMARK_ARGS


def test_strategy_specs_carry_options():
    strategy = strategy_from_spec("professor:every=4:free_run=sample")
    assert (strategy.name, strategy.every, strategy.free_run) == (
        "professor",
        4,
        "sample",
    )
    assert strategy_from_spec("gp").epsilon == 1.0
    for bad, message in [
        ("nope", "unknown strategy"),
        ("professor:every=0", "every"),
        ("gp:every=2", "every"),
        ("gp:epsilon", "KEY=VALUE"),
    ]:
        with pytest.raises(SystemExit, match=message):
            strategy_from_spec(bad)


def test_train_flops_matches_a_hand_count():
    """Every matrix product of a 1-layer model, forward, then x3."""
    layers, hidden, inter, vocab, length, batch = 1, 4, 8, 10, 3, 2
    tokens = batch * length
    forward = 0
    forward += 3 * 2 * tokens * hidden * hidden  # Q, K, V projections
    forward += 2 * batch * length * length * hidden  # Q K^T, all heads
    forward += 2 * batch * length * length * hidden  # A V, all heads
    forward += 2 * tokens * hidden * hidden  # attention output
    forward += 2 * tokens * hidden * inter  # FFN in
    forward += 2 * tokens * inter * hidden  # FFN out
    forward += 2 * tokens * hidden * hidden  # MLM dense
    forward += 2 * tokens * hidden * vocab  # MLM projection (E^T)
    # Backward: input and weight gradients, each as costly as the forward.
    assert train_flops(layers, hidden, inter, vocab, length, batch) == (
        3 * forward
    )
    assert forward == 2 * (4 * 16 + 2 * 32 + 16 + 40) * 6 + 4 * 2 * 9 * 4


def test_train_flops_scales_with_layers_and_batch():
    one = train_flops(1, 768, 3072, 21128, 256, 16)
    head = train_flops(0, 768, 3072, 21128, 256, 16)
    assert train_flops(12, 768, 3072, 21128, 256, 16) == head + 12 * (
        one - head
    )
    assert train_flops(12, 768, 3072, 21128, 256, 32) == 2 * train_flops(
        12, 768, 3072, 21128, 256, 16
    )


def test_gathered_head_flops_count_only_the_scored_positions():
    """The head at 2 of 3 positions a row, and the one-hot gather product
    (2 x 3 by 3 x hidden a row) forward and its input gradient."""
    layers, hidden, inter, vocab, length, batch = 1, 4, 8, 10, 3, 2
    full = train_flops(layers, hidden, inter, vocab, length, batch)
    gathered = train_flops(layers, hidden, inter, vocab, length, batch, 2)
    head_per_position = 3 * 2 * (hidden * hidden + hidden * vocab)
    gather = 2 * (2 * 2 * length * hidden) * batch
    assert full - gathered == batch * head_per_position - gather
    assert train_flops(layers, hidden, inter, vocab, length, batch, 3) == (
        full + gather * 3 // 2
    )


def test_decode_flops_match_a_hand_count():
    """One source of 2 tokens, a title of 2 tokens, beam 3: the source's
    layers, attention and head once; per title token each candidate's
    layers, head and attention over the cached positions."""
    layers, hidden, inter, vocab = 1, 4, 8, 10
    body = 2 * (4 * 16 + 2 * 32)
    head = 2 * (16 + 40)
    source = body * 2 + 4 * hidden * 2**2 + head
    steps = sum(3 * (body + head + 4 * hidden * (2 + i)) for i in (1, 2))
    assert decode_flops(layers, hidden, inter, vocab, [2], [2], 3) == (
        source + steps
    )
    assert decode_flops(layers, hidden, inter, vocab, [2, 2], [2, 2], 3) == (
        2 * (source + steps)
    )


def test_a_step_of_known_flops_gives_its_mfu():
    """A synthetic step: 5 products of the model's largest shape, timed
    (by a fake clock) at 1.25x one product at the peak, is 80% MFU; the
    peak is the fastest of the model's shapes, never a slower one."""
    shapes = train_shapes(64, 256, 1000, 32, 4, head_positions=8)
    largest = max(shapes, key=lambda s: s[0] * s[1] * s[2])
    rate = {shape: 1e9 if shape == largest else 5e8 for shape in shapes}

    def timer(shape, dtype):
        assert dtype == "float32"
        m, k, n = shape
        return 2 * m * k * n / rate[shape]

    peak = peak_matmul_flops("fp32", shapes, timer)
    assert peak == pytest.approx(1e9)
    m, k, n = largest
    step_flops = 5 * 2 * m * k * n
    step_seconds = 1.25 * 5 * timer(largest, "float32")
    assert mfu(step_flops, step_seconds, peak) == pytest.approx(0.8)


def test_measured_peak_bounds_the_same_products_timed_as_a_step():
    """Products of one model shape timed as a step (the best of a few
    steps) are no faster than the measured peak of that shape allows:
    MFU about 100% at most (the margin: two timings on a shared CPU)."""
    import time

    import numpy as np
    from keras import ops

    shape = (512, 256, 512)
    peak = peak_matmul_flops("fp32", [shape])
    rng = np.random.default_rng(1)
    a = ops.convert_to_tensor(rng.standard_normal(shape[:2], "float32"))
    b = ops.convert_to_tensor(rng.standard_normal(shape[1:], "float32"))
    ops.convert_to_numpy(ops.matmul(a, b))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(5):
            c = ops.matmul(a, b)
        ops.convert_to_numpy(c[0, 0])
        best = min(best, time.perf_counter() - started)
    assert 0 < mfu(5 * 2 * 512 * 256 * 512, best, peak) <= 1.5


def test_random_batch_targets_the_last_quarter():
    token_ids, segment_ids = random_batch(3, 32, 100)
    assert token_ids.shape == segment_ids.shape == (3, 32)
    assert token_ids.min() >= 1 and token_ids.max() < 100
    assert (segment_ids[:, :24] == 0).all()
    assert (segment_ids[:, 24:] == 1).all()


def test_unilm_additive_mask_matches_the_rule():
    torch = pytest.importorskip("torch")
    from tasks.lib.benchmarks.peer import unilm_additive_mask

    tokens = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 7, 8, 9]])
    segments = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    mask = unilm_additive_mask(tokens, segments, torch.float32)
    assert mask.shape == (2, 1, 5, 5)
    for n in range(2):
        for i in range(5):
            for j in range(5):
                seen = tokens[n, j] != 0 and (segments[n, j] == 0 or j <= i)
                expected = 0.0 if seen else torch.finfo(torch.float32).min
                assert mask[n, 0, i, j].item() == expected, (n, i, j)


@pytest.mark.slow
def test_peer_holds_our_weights_and_decodes_our_titles():
    """The decoding peer gets our weights: its greedy titles are ours."""
    pytest.importorskip("transformers")
    import numpy as np

    from models import build_transformer_model
    from models.decoding import Seq2SeqDecoder
    from tasks.lib.benchmarks.peer import time_peer_decode
    from tests.checkpoints import randomize
    from tests.common import TINY
    from weights.formats import model_arrays

    model = build_transformer_model(
        dict(TINY), model="roformer", application="unilm"
    )
    randomize(model, seed=2)
    rng = np.random.default_rng(0)
    sources = [[2, *rng.integers(5, 128, n).tolist(), 3] for n in (3, 7)]
    _, titles = time_peer_decode(
        model.bert_config, model_arrays(model), sources, 6, end_id=3
    )
    decoder = Seq2SeqDecoder(model, end_id=3, maxlen=6, jit_compile=False)
    assert titles == decoder.beam_search_batch(sources, 1)


def table_rows(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return header, [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        for line in lines[2:]
    ]


def number(cell):
    return float(cell.rstrip("%"))


@pytest.mark.slow
def test_tiny_train_run_prints_a_table(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "table.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tasks" / "benchmark.py"),
            "train",
            *TINY_BENCHMARK_ARGS,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    header, rows = table_rows(result.stdout)
    assert "peer ms/step" in header and "ours/peer (tokens/s)" in header
    assert [row["strategy"] for row in rows] == [
        "baseline",
        "gp",
        "professor:every=2",
    ]
    for row in rows:
        assert row["batch"] == "4"
        for column in ("ours ms/step", "ours tokens/s", "MFU"):
            assert number(row[column]) > 0, (column, row)
        assert number(row["MFU"]) <= 100, row
        assert row["ours peak mem"] == "n/a" or "GiB" in row["ours peak mem"]
    baseline, *others = rows
    for column in ("peer ms/step", "peer tokens/s", "ours/peer (tokens/s)"):
        assert number(baseline[column]) > 0, (column, baseline)
        assert all(row[column] == "—" for row in others)
    assert baseline["× baseline"] == "1.00"
    for row in others:
        # Milliseconds are printed to 0.1 and "× baseline" to 0.01: the ratio
        # of the printed milliseconds bounds it within those roundings.
        ms, base = number(row["ours ms/step"]), number(baseline["ours ms/step"])
        low, high = (ms - 0.05) / (base + 0.05), (ms + 0.05) / (base - 0.05)
        assert low - 0.005 <= number(row["× baseline"]) <= high + 0.005, row
    # Each row's strategy once per round, and the peer once per round.
    ours = [line for line in result.stderr.splitlines() if "round 2:" in line]
    assert sum(line.startswith("ours ") for line in ours) == len(rows)
    assert sum(line.startswith("peer ") for line in ours) == 1
    ratio = number(baseline["ours tokens/s"]) / number(
        baseline["peer tokens/s"]
    )
    assert number(baseline["ours/peer (tokens/s)"]) == pytest.approx(
        ratio, rel=0.02
    )
    assert (
        out.read_text(encoding="utf-8").splitlines()[0].startswith("| batch |")
    )


def test_padding_rows_count_padding_and_shapes():
    """Padding = 1 - real tokens / padded tokens, counted by hand; sorting
    within windows pads less than shuffling, exact lengths least."""
    tokens = [*SPECIAL_TOKENS, *CHARACTERS]
    tokenizer = Tokenizer({token: i for i, token in enumerate(tokens)})
    pairs = [
        (CHARACTERS[: 1 + i % 4], CHARACTERS[: 2 + (7 * i) % 17])
        for i in range(40)
    ]
    batches = Seq2SeqBatches(pairs, tokenizer, maxlen=32, batch_size=4)
    rows = padding_rows(batches, PADDING_LAYOUTS, epochs=2)
    by_layout = {row["layout"]: row for row in rows}
    real = sum(len(sample[0]) for sample in batches.samples)
    batches.bucket, batches.length_multiple = False, None
    padded = 0
    for epoch in range(2):
        batches.set_epoch(epoch)
        padded += sum(batches[i][0][0].size for i in range(len(batches)))
    shuffled = by_layout["shuffled"]
    assert shuffled["padding"] == pytest.approx(1 - 2 * real / padded)
    exact = by_layout["sorted in windows, exact"]
    assert exact["padding"] < shuffled["padding"]
    eight = by_layout["sorted in windows, multiple of 8"]
    assert exact["padding"] <= eight["padding"]
    assert eight["shapes"] <= exact["shapes"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["padding", "--epochs", "0"], "--epochs 0: expected 1 or more"),
        (["padding", "--maxlen", "3"], "--maxlen 3: expected 4 or more"),
        (["decode", "--beams", "2", "0"], "--beams 0: expected 1 or more"),
        (["decode", "--layers", "0"], "--layers 0: expected 1 or more"),
        (["decode", "--seed", "-1"], "--seed -1: expected 0 or more"),
    ],
)
def test_each_count_is_checked_against_the_least_it_declares(argv, message):
    from tasks.lib.benchmarks import build_parser

    args = build_parser().parse_args(argv)
    with pytest.raises(SystemExit, match=message):
        args.check(args)
