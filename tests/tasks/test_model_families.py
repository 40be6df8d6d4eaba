"""tasks/csl_title.py on RoFormer and NEZHA model directories, as users
get them.

Two directories of one tiny random RoFormer: bojone's layout (a
`bert_config.json` that does not name the family, a TF checkpoint with
BERT's names and no position embeddings) and Hugging Face's (`config.json`
with `model_type: roformer`, `model.safetensors`); one NEZHA directory in
Huawei's layout (`bert_config.json` with `max_relative_position`, a TF
checkpoint of BERT's names without position embeddings). `--model-dir`
must find the family from the files alone, train with a strategy and
decode.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from models import build_transformer_model
from tests.checkpoints import randomize
from tests.checkpoints import write_tf_checkpoint
from tests.common import ROOT
from tests.common import VOCAB_DIR
from tests.common import backends_in_turn
from tests.common import require_shared
from weights.formats import model_arrays

SCRIPT = ROOT / "tasks" / "csl_title.py"
VOCAB_SIZE = 21128  # the rows bert-base-chinese's vocab.txt indexes
SHAPE = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)
RUN_ARGS = [
    "--maxlen",
    "96",
    "--title-maxlen",
    "8",
    "--batch-size",
    "8",
    "--eval-batch-size",
    "16",
    "--lr",
    "1e-3",
    "--limit",
    "40",
    "--epochs",
    "1",
    "--beams",
    "1",
    "--no-progress",
]


def google_layout_dir(directory, family, config):
    """bert_config.json without a family + TF checkpoint, BERT's names."""
    model = build_transformer_model(dict(config), model=family, with_mlm=1)
    randomize(model, seed=0, scale=0.05)
    directory.mkdir()
    (directory / "bert_config.json").write_text(json.dumps(config))
    write_tf_checkpoint(model_arrays(model), directory / "bert_model.ckpt")
    shutil.copy(require_shared(VOCAB_DIR / "vocab.txt"), directory)
    return directory


def hf_roformer_dir(directory):
    """Hugging Face's save_pretrained of a RoFormerForMaskedLM."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.RoFormerConfig(**SHAPE)
    transformers.RoFormerForMaskedLM(config).save_pretrained(directory)
    shutil.copy(require_shared(VOCAB_DIR / "vocab.txt"), directory)
    return directory


def bojone_roformer_dir(directory):
    return google_layout_dir(directory, "roformer", SHAPE)


def huawei_nezha_dir(directory):
    return google_layout_dir(
        directory, "nezha", {**SHAPE, "max_relative_position": 64}
    )


LAYOUTS = {
    "bojone": bojone_roformer_dir,
    "hf": hf_roformer_dir,
    "huawei": huawei_nezha_dir,
}
FAMILY = {"bojone": "roformer", "hf": "roformer", "huawei": "nezha"}


# Finding the family and reading the files is NumPy; both families train
# under every strategy on both backends in-process (test_positions.py).
CASES = backends_in_turn(
    [
        ("bojone", "baseline"),
        ("hf", "replace"),
        ("bojone", "gp"),
        ("huawei", "baseline"),
        ("huawei", "replace"),
        ("huawei", "gp"),
    ],
    "the families' steps are tested in-process on both backends",
)


@pytest.mark.slow
@pytest.mark.parametrize("layout, strategy", CASES)
def test_model_dir_trains_and_decodes(layout, strategy, csl_dev_path, tmp_path):
    model_dir = LAYOUTS[layout](tmp_path / "model")
    out = tmp_path / "run"
    command = [sys.executable, str(SCRIPT), "--data", str(csl_dev_path)]
    command += ["--model-dir", str(model_dir), "--out", str(out)]
    command += ["--strategy", strategy, *RUN_ARGS]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text("utf-8"))
    assert f"{FAMILY[layout]}, 1 layers" in results["model"]
    assert results["test"]["1"]["titles"] == 4
    saved = json.loads((out / "model.json").read_text("utf-8"))
    assert saved["model_type"] == FAMILY[layout]
