"""Readers: TF checkpoint, pytorch_model.bin, directories, missing deps."""

import sys

import numpy as np
import pytest

from models import build_transformer_model
from tests.checkpoints import hf_masked_lm
from tests.checkpoints import hf_to_google_arrays
from tests.checkpoints import tiny_arrays
from tests.checkpoints import write_tf_checkpoint
from tests.common import TINY
from weights import formats
from weights import read_checkpoint


def assert_same_arrays(left, right):
    assert sorted(left) == sorted(right)
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def test_tf_checkpoint_drops_optimizer_slots(tmp_path):
    arrays = tiny_arrays()
    slots = {
        "bert/embeddings/word_embeddings/adam_m": np.ones((128, 32), "f4"),
        "global_step": np.array(7, "int64"),
    }
    prefix = write_tf_checkpoint({**arrays, **slots}, tmp_path / "m.ckpt")
    assert_same_arrays(read_checkpoint(prefix), arrays)
    # The `.index` file and the directory name the same checkpoint.
    assert_same_arrays(read_checkpoint(f"{prefix}.index"), arrays)
    assert_same_arrays(read_checkpoint(tmp_path), arrays)


def test_pytorch_bin_with_weights_only(tmp_path):
    torch = pytest.importorskip("torch")
    hf = hf_masked_lm(seed=1)
    path = tmp_path / "pytorch_model.bin"
    torch.save(hf.state_dict(), path)
    assert formats.resolve(tmp_path) == ("torch", path)
    arrays = read_checkpoint(path)
    expected = hf_to_google_arrays(hf)
    for name in expected:
        np.testing.assert_array_equal(arrays[name], expected[name], name)
    model = build_transformer_model(dict(TINY), tmp_path, application="unilm")
    assert model.get_layer("MLM-Bias").bias.shape == (128,)


def test_old_bertmodel_names_without_prefix(tmp_path):
    """BertModel files: no `bert.` prefix, LayerNorm `gamma`/`beta`."""
    torch = pytest.importorskip("torch")
    hf = hf_masked_lm(seed=2)
    state = {
        name.removeprefix("bert.").replace(
            "LayerNorm.weight", "LayerNorm.gamma"
        ): tensor
        for name, tensor in hf.state_dict().items()
        if name.startswith("bert.")
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    arrays = read_checkpoint(path)
    expected = hf_to_google_arrays(hf)
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], expected[name], name)
    assert len(arrays) == len([n for n in expected if n.startswith("bert/")])


def test_hf_safetensors_are_renamed_and_transposed(tmp_path):
    hf = hf_masked_lm(seed=3)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    arrays = read_checkpoint(tmp_path)
    assert_same_arrays(arrays, hf_to_google_arrays(hf))


def test_missing_tensorflow_says_how_to_convert(tmp_path, monkeypatch):
    (tmp_path / "m.ckpt.index").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match="python -m weights.convert") as info:
        read_checkpoint(tmp_path / "m.ckpt")
    assert info.value.__suppress_context__


def test_missing_torch_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch"):
        read_checkpoint(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "bert_model.ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        read_checkpoint(tmp_path)


def test_keras_weights_are_not_named_tensors(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="model.load_weights"):
        read_checkpoint(path)
