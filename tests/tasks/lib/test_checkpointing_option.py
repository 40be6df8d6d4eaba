"""--gradient-checkpointing: parsed by every training script, recorded in
config.json, free to change when a run resumes, and handed to the
trainer (the model's blocks are then checkpointed: tests/models/
test_remat.py)."""

import argparse
import json

import pytest

from models import backend
from models.bert import BertNetwork
from models.strategies import registry
from tasks.lib import pretraining_options
from tasks.lib import seq2seq_options
from tasks.lib.experiment import build_trainer
from tasks.lib.pretraining_run import make_trainer
from tasks.lib.rundir import RunDirectory
from tests.common import trainer_model

PARSERS = {
    "seq2seq": lambda: seq2seq_options.build_parser(
        "x", {"maxlen": 64, "title_maxlen": 8}
    ),
    "pretrain": lambda: pretraining_options.build_parser("x"),
}
REQUIRED = {"seq2seq": [], "pretrain": ["--text", "a.txt"]}


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_the_option_parses_and_is_off_by_default(script):
    parser = PARSERS[script]()
    assert not parser.parse_args(REQUIRED[script]).gradient_checkpointing
    args = parser.parse_args([*REQUIRED[script], "--gradient-checkpointing"])
    assert args.gradient_checkpointing is True


def test_a_resumed_run_may_turn_it_on_or_off(tmp_path):
    """It changes neither the model nor the gradients, so it may change,
    as --epochs may; config.json records the value of the latest start."""
    run = RunDirectory(tmp_path)
    settings = {"lr": 1e-3, "gradient_checkpointing": False}
    run.check_settings(settings)
    run.check_settings({**settings, "gradient_checkpointing": True})
    saved = json.loads((tmp_path / "config.json").read_text("utf-8"))
    assert saved["gradient_checkpointing"] is True
    run.check_settings(settings)
    with pytest.raises(ValueError, match="lr"):
        run.check_settings({**settings, "lr": 1e-2})


@pytest.mark.parametrize("on", [False, True])
def test_the_trainers_the_scripts_build_checkpoint_as_asked(on):
    seq2seq = argparse.Namespace(
        seed=0,
        label_smoothing=0.0,
        lr=1e-3,
        warmup_steps=0,
        ema=None,
        gradient_checkpointing=on,
    )
    model = trainer_model()
    build_trainer(model, registry.get("baseline"), seq2seq)
    assert BertNetwork.from_model(model).gradient_checkpointing is on
    pretrain = argparse.Namespace(
        lr=1e-3,
        warmup=0,
        steps=10,
        decay="linear",
        weight_decay=0.01,
        seed=0,
        gradient_checkpointing=on,
    )
    model = trainer_model()
    make_trainer(model, pretrain, "fp32", max_predictions=4)
    assert BertNetwork.from_model(model).gradient_checkpointing is on


@pytest.mark.skipif(
    backend.BACKEND != "tensorflow", reason="JAX trains gp with it"
)
def test_tensorflow_refuses_gp_with_checkpointing_before_any_run(
    tmp_path, capsys
):
    from tasks.csl_title import DEFAULTS
    from tasks.lib.seq2seq import main

    out = tmp_path / "out"
    argv = ["--strategy", "gp", "--gradient-checkpointing", "--out", str(out)]
    with pytest.raises(SystemExit) as stop:
        main(argv, "csl_title", "t", DEFAULTS)
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert "error" in line and "second derivative" in line
    assert not out.exists()
