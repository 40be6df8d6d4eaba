"""tasks/csl_title.py on an mT5 model directory, as Hugging Face saves
one: `config.json` (model_type mt5), `model.safetensors` and the
`spiece.model` its vocabulary is. A tiny random mT5 and a SentencePiece
model trained on the CSL abstracts; the run trains the encoder-decoder
with a strategy, decodes with T5Decoder and scores as every run does.
It must resume, refuse what cannot apply before training, decode new
text from its directory, and compare with a BERT run on the same test
pairs in one report.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from data import read_pairs
from models.strategies.names import STRATEGY_NAMES
from models.t5_trainer import EncoderDecoderTrainer
from tasks.lib.cli import UsageError
from tasks.lib.encoder_decoder import EncoderDecoderTask
from tasks.lib.seq2seq_options import build_parser
from tasks.lib.task_defaults import TASK_DEFAULTS
from tests.checkpoints import hf_mt5
from tests.checkpoints import write_sentencepiece_model
from tests.common import CSL_DEV
from tests.common import ROOT
from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.tasks.test_model_families import RUN_ARGS

SCRIPT = ROOT / "tasks" / "csl_title.py"
# Room for the pieces of the abstracts the SentencePiece model is
# trained on (their characters alone are about 1,500).
VOCAB_SIZE = 2000


def csl_title(*argv):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )


@pytest.fixture(scope="module")
def mt5_dir(tmp_path_factory):
    """save_pretrained of a random MT5ForConditionalGeneration, with an
    spiece.model trained on the first 100 CSL pairs."""
    directory = tmp_path_factory.mktemp("mt5")
    pairs = read_pairs(require_shared(CSL_DEV))[:100]
    texts = [text for pair in pairs for text in pair]
    write_sentencepiece_model(directory / "spiece.model", texts, VOCAB_SIZE)
    hf_mt5(vocab_size=VOCAB_SIZE).save_pretrained(directory)
    return directory


def train(mt5_dir, csl_dev_path, out, strategy="baseline", *extra):
    return csl_title(
        "--data", csl_dev_path, "--model-dir", mt5_dir, "--out", out,
        "--strategy", strategy, *RUN_ARGS, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mt5_run(mt5_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mt5-baseline"
    result = train(mt5_dir, require_shared(CSL_DEV), out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def check_finished(out, strategy):
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["family"] == "mt5"
    assert "(mt5, 2+2 layers, 16 hidden" in results["model"]
    assert results["strategy"] == strategy
    assert results["test"]["1"]["titles"] == 4
    assert 0 <= results["test"]["1"]["bleu"] <= 1
    saved = json.loads((out / "model.json").read_text("utf-8"))
    assert saved["model_type"] == "mt5"
    assert (out / "model-spiece.model").is_file()
    rows = (out / "predictions-beam1.tsv").read_text("utf-8").splitlines()
    assert len(rows) == 1 + 4


@pytest.mark.slow
def test_an_mt5_dir_trains_decodes_and_scores(mt5_run):
    check_finished(mt5_run, "baseline")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["replace", "gp"])
def test_strategies_train_an_mt5_dir(strategy, mt5_dir, csl_dev_path, tmp_path):
    out = tmp_path / "run"
    result = train(mt5_dir, csl_dev_path, out, strategy)
    assert result.returncode == 0, result.stderr[-3000:]
    check_finished(out, strategy)


@pytest.mark.slow
def test_an_mt5_run_resumes_after_its_last_epoch(
    mt5_dir, mt5_run, csl_dev_path, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(mt5_run, out)
    result = train(mt5_dir, csl_dev_path, out, "baseline", "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming {out} after epoch 1." in result.stdout
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert [entry["epoch"] for entry in results["history"]] == [1, 2]


@pytest.mark.slow
def test_an_mt5_run_starts_from_another(mt5_dir, mt5_run, tmp_path):
    """--init RUN_DIR: the first epoch starts from that run's best weights,
    and results.json says where it started."""
    out = tmp_path / "run"
    data = require_shared(CSL_DEV)
    result = train(mt5_dir, data, out, "replace", "--init", mt5_run)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert results["init"]["run"] == str(mt5_run)
    assert results["init"]["strategy"] == "baseline"


def test_scst_is_refused_before_anything_is_read(mt5_dir, tmp_path):
    out = tmp_path / "run"
    result = train(mt5_dir, require_shared(CSL_DEV), out, "scst")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "csl_title.py: error: --strategy scst: not built for an encoder-"
        "decoder (it decodes titles inside the training step through the "
        "UniLM network); use a BERT-family model or another strategy"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "strategy, option, refused",
    [
        ("mrt", None, "--strategy mrt: not built for an encoder-decoder"),
        ("oracle", None, "--strategy oracle: not built for an encoder-"),
        (
            "baseline",
            "--gradient-checkpointing",
            "--gradient-checkpointing: not for a T5 model",
        ),
        ("gp", "--no-simplify", "--no-simplify: not for a T5 model"),
    ],
)
def test_what_cannot_apply_is_refused_in_one_line(strategy, option, refused):
    """As `run_owned` checks them, before the data are read."""
    args = build_parser("x", TASK_DEFAULTS["csl_title"]).parse_args(
        ["--strategy", strategy, *([option] if option else [])]
    )
    with pytest.raises(UsageError) as caught:
        EncoderDecoderTask.check_options(args)
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"error: {refused}")
    assert strategy not in ("mrt", "oracle") or "UniLM network" in line


def test_every_other_strategy_is_accepted():
    allowed = set(STRATEGY_NAMES) - set(EncoderDecoderTrainer.NOT_BUILT)
    for strategy in sorted(allowed):
        args = build_parser("x", TASK_DEFAULTS["csl_title"]).parse_args(
            ["--strategy", strategy]
        )
        EncoderDecoderTask.check_options(args)


@pytest.mark.slow
def test_generate_and_serve_decode_the_runs_test_titles(mt5_run):
    """A run's titles for new text at beam 1 are its test predictions."""
    from tasks.lib.decoding_options import DecodingOptions
    from tasks.lib.generation import load_generator
    from tasks.lib.run_diagnostics import diagnosable
    from tasks.lib.serving import build_app
    from tests.common import running
    from tests.tasks.test_serve import request

    rows = (mt5_run / "predictions-beam1.tsv").read_text("utf-8")
    sources, _, titles = zip(*(r.split("\t") for r in rows.splitlines()[1:]))
    generator = load_generator(mt5_run)
    found = generator.generate(list(sources), DecodingOptions(beams=1))
    assert [" ".join(t[0].text.split()) for t in found] == list(titles)
    assert generator.describe()["family"] == "mt5"
    # serve.py's app on the same generator answers with the same titles.
    with running(build_app(generator)) as base:
        status, answer = request(
            f"{base}/generate", {"texts": list(sources), "beams": 1}
        )
    assert status == 200, answer
    served = [r["titles"][0]["title"] for r in answer["results"]]
    assert [" ".join(t.split()) for t in served] == list(titles)
    # The exposure-bias diagnostics pass over it, in one stated line.
    with pytest.raises(ValueError, match="not computed for an encoder-dec"):
        diagnosable([mt5_run])


@pytest.mark.slow
def test_bert_and_mt5_runs_compare_in_one_report(
    mt5_dir, mt5_run, csl_dev_path, tmp_path
):
    """A tiny random BERT on the same data and split: one report, a
    Family column, the same test pairs."""
    from tasks import compare

    bert = tmp_path / "bert"
    vocab = require_shared(VOCAB_DIR / "vocab.txt")
    result = csl_title(
        "--data", csl_dev_path, "--vocab", vocab, "--out", bert,
        "--layers", "1", "--hidden", "32", "--heads", "2",
        "--intermediate", "64", *RUN_ARGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # A BERT run does not warm-start an mT5 one: other vocabulary, model.
    refused = train(
        mt5_dir, csl_dev_path, tmp_path / "x", "baseline", "--init", bert
    )
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert f"--init {bert}: its vocabulary" in line
    report = compare.main([str(bert), str(mt5_run), "--out", str(tmp_path)])
    assert report["problems"] == []
    families = {(row["strategy"], row["family"]) for row in report["aggregate"]}
    assert families == {("baseline", "bert"), ("baseline", "mt5")}
    header = report["markdown"].split("| Beam")[1].splitlines()[0]
    assert "| Family |" in header
    references = [
        [row.split("\t")[1] for row in rows.splitlines()]
        for rows in (
            (run / "predictions-beam1.tsv").read_text("utf-8")
            for run in (bert, mt5_run)
        )
    ]
    assert references[0] == references[1]
