"""The built-in default: it learns, its schedule resumes, its end is shown."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from data import Tokenizer
from data import synthetic
from models import build_transformer_model
from models.trainer import Seq2SeqTrainer
from tasks.lib.console import print_examples
from tasks.lib.factory import warmup_constant
from tasks.lib.model_files import ModelFiles
from tasks.lib.rundir import RunDirectory
from tasks.lib.seq2seq_options import build_parser
from tasks.lib.seq2seq_options import check_options
from tasks.lib.seq2seq_options import fill_training_defaults
from tests.common import ROOT

SCRIPT = ROOT / "tasks" / "csl_title.py"


def defaults_for(checkpoint, argv=()):
    """The training settings `run` uses, from a command line's flags."""
    parser = build_parser("test", {"maxlen": 64, "title_maxlen": 8})
    args = parser.parse_args(list(argv))
    fill_training_defaults(args, ModelFiles("config.json", checkpoint, None))
    return args


def learning_rate(args):
    """The fine-tuning schedule of a command line's settings."""
    return warmup_constant(args.lr, args.warmup_steps)


def test_a_checkpoint_keeps_the_published_settings():
    args = defaults_for("bert_model.ckpt")
    assert (args.epochs, args.lr, args.warmup_steps) == (20, 1e-5, 0)
    assert learning_rate(args) == 1e-5


def test_a_random_model_warms_up_to_a_constant_rate():
    args = defaults_for(None, ["--warmup-steps", "10", "--lr", "1e-3"])
    schedule = learning_rate(args)
    rates = [float(schedule(step)) for step in (0, 5, 10, 11, 1000)]
    np.testing.assert_allclose(rates, [0, 5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-6)


def test_warm_up_is_an_option_with_a_checkpoint():
    args = defaults_for("bert_model.ckpt", ["--warmup-steps", "4"])
    assert args.lr == 1e-5
    assert float(learning_rate(args)(2)) == pytest.approx(5e-6)


@pytest.mark.parametrize(
    "flags, culprit",
    [
        (["--warmup-steps", "-1"], "--warmup-steps -1"),
        (["--dropout", "1"], "--dropout 1.0"),
        (["--dropout", "-0.1"], "--dropout -0.1"),
    ],
)
def test_bad_warm_up_or_dropout_is_refused(flags, culprit):
    args = defaults_for(None, flags)
    with pytest.raises(SystemExit, match=culprit):
        check_options(args)


def tiny_trainer(args, vocab_size):
    keras.utils.set_random_seed(0)
    model = build_transformer_model(
        None,
        application="unilm",
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    trainer = Seq2SeqTrainer(model, "baseline", seed=0)
    optimizer = keras.optimizers.Adam(learning_rate(args))
    trainer.compile(optimizer=optimizer)
    return trainer


def test_a_resumed_run_continues_the_warm_up(tmp_path):
    """The step count is saved with the epoch: the resumed optimizer is at
    the same point of the schedule, with the same moments."""
    vocab = synthetic.write_vocab(tmp_path / "vocab.txt")
    lines = vocab.read_text("utf-8").splitlines()
    tokenizer = Tokenizer({t: i for i, t in enumerate(lines)})
    pairs = synthetic.make_pairs(4, seed=0)
    encoded = [tokenizer.encode(c, t, maxlen=40) for t, c in pairs]
    length = max(len(ids) for ids, _ in encoded)
    pad = [(ids + [0] * (length - len(ids))) for ids, _ in encoded]
    seg = [(s + [0] * (length - len(s))) for _, s in encoded]
    batch = (np.array(pad, "int32"), np.array(seg, "int32"))
    args = defaults_for(None, ["--warmup-steps", "8", "--lr", "1e-2"])

    first = tiny_trainer(args, len(lines))
    first.fit(x=batch, batch_size=len(pairs), epochs=3, verbose=0)
    out = RunDirectory(tmp_path / "run")
    state = {"epochs_done": 3, "checkpoint": None, "best": None}
    out.save_checkpoint(first, state, "epoch-3")

    resumed = tiny_trainer(args, len(lines))
    out.restore_checkpoint(resumed, out.load_state(fresh={}))
    assert int(resumed.optimizer.iterations) == 3
    assert float(resumed.optimizer.learning_rate) == pytest.approx(3e-2 / 8)
    saved = [*first.model.weights, *first.optimizer.variables]
    loaded = [*resumed.model.weights, *resumed.optimizer.variables]
    for a, b in zip(saved, loaded, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )


def test_examples_are_short_and_labelled(tmp_path, capsys):
    path = tmp_path / "predictions-beam1.tsv"
    rows = [("长" * 100, "标题一", "标题一"), ("内容", "标题二", "")]
    path.write_text(
        "source\treference\tprediction\n"
        + "".join("\t".join(row) + "\n" for row in rows),
        encoding="utf-8",
    )
    print_examples(path, count=3, width=10)
    printed = capsys.readouterr().out
    assert f"First 2 test titles (all in {path})" in printed
    assert "  source      " + "长" * 10 + "…\n" in printed
    assert "  prediction  标题一\n" in printed
    assert "  reference   标题二\n  prediction  \n" in printed


@pytest.mark.slow
def test_the_built_in_default_learns(tmp_path):
    """`python tasks/csl_title.py` as the README runs it: its test titles
    reach ROUGE-L 0.6 at beam 1 (0.08 before warm-up and width 128)."""
    out = tmp_path / "default"
    command = [sys.executable, str(SCRIPT), "--out", str(out)]
    result = subprocess.run(
        [*command, "--beams", "1", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["test"]["1"]["rouge-l"] >= 0.6, results["test"]
    predictions = (out / "predictions-beam1.tsv").read_text("utf-8")
    rows = [line.split("\t") for line in predictions.splitlines()[1:]]
    assert len({prediction for _, _, prediction in rows}) > len(rows) / 2
    assert "First 3 test titles" in result.stdout
    source, reference, prediction = rows[0]
    assert f"  reference   {reference}\n" in result.stdout
    assert f"  prediction  {prediction}\n" in result.stdout
