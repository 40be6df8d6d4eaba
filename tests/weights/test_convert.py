"""`python -m weights.convert`: TF checkpoint -> Google-named safetensors."""

import subprocess
import sys

import numpy as np
import pytest

from data.vocab import SEQ2SEQ_TOKENS
from tests.checkpoints import tiny_arrays
from tests.checkpoints import write_tf_checkpoint
from tests.common import ROOT
from weights import read_checkpoint
from weights import read_keep_tokens
from weights.convert import main
from weights.formats import write_safetensors


def test_round_trip_gives_the_same_arrays(tmp_path, capsys):
    arrays = tiny_arrays()
    slot = {"bert/embeddings/word_embeddings/adam_v": np.ones((128, 32), "f4")}
    prefix = write_tf_checkpoint({**arrays, **slot}, tmp_path / "bert.ckpt")
    out = tmp_path / "bert.safetensors"
    main([str(prefix), str(out)])
    assert f"wrote {len(arrays)} tensors" in capsys.readouterr().out
    converted = read_checkpoint(out)
    assert sorted(converted) == sorted(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(converted[name], array, name)
    assert read_keep_tokens(out) is None


def test_keep_tokens_from_vocab(tmp_path):
    arrays = tiny_arrays()
    vocab = tmp_path / "vocab.txt"
    tokens = [*SEQ2SEQ_TOKENS, "##中", "abc", "##de"]
    tokens += [f"tok{i}" for i in range(128 - len(tokens))]
    vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    full = write_safetensors(arrays, tmp_path / "full.safetensors")
    out = tmp_path / "simplified.safetensors"
    main([str(full), str(out), "--keep-tokens-from", str(vocab)])
    keep = read_keep_tokens(out)
    assert 4 not in keep and keep[:4] == [0, 1, 2, 3]  # `##中` is dropped
    converted = read_checkpoint(out)
    for name in (
        "bert/embeddings/word_embeddings",
        "cls/predictions/output_bias",
    ):
        np.testing.assert_array_equal(converted[name], arrays[name][keep])


def test_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "weights.convert", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--keep-tokens-from" in result.stdout


def test_missing_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main([str(tmp_path / "nope.ckpt"), str(tmp_path / "out.safetensors")])
    assert raised.value.code == 2
    assert "checkpoint not found" in capsys.readouterr().err
