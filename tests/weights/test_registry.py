"""The registry is data; download() is tested on file:// URLs only."""

import dataclasses
import hashlib
import re

import pytest

from weights import registry

EXPECTED = {
    "chinese_L-12_H-768_A-12",
    "chinese_wwm_L-12_H-768_A-12",
    "chinese_wwm_ext_L-12_H-768_A-12",
    "chinese_roberta_wwm_ext_L-12_H-768_A-12",
    "chinese_roformer_L-12_H-768_A-12",
}


def test_the_five_chinese_checkpoints_are_listed():
    assert set(registry.PRESETS) == EXPECTED
    for preset in registry.PRESETS.values():
        assert preset.original.startswith("https://")
        for remote in preset.files.values():
            assert remote.url.startswith("https://huggingface.co/")
            assert remote.sha256 is None or re.fullmatch(
                r"[0-9a-f]{64}", remote.sha256
            )


def test_unknown_name():
    with pytest.raises(KeyError, match="known: chinese_L-12"):
        registry.get("bert-large")


@pytest.fixture
def local_preset(tmp_path, monkeypatch):
    """A preset whose files are served from file:// URLs."""
    source = tmp_path / "server"
    source.mkdir()
    contents = {
        "config.json": b"{}",
        "vocab.txt": b"[PAD]\n",
        "pytorch_model.bin": bytes(range(256)) * 5000,
    }
    files = {}
    for name, data in contents.items():
        (source / name).write_bytes(data)
        files[name] = registry.RemoteFile((source / name).as_uri())
    preset = dataclasses.replace(
        registry.PRESETS["chinese_L-12_H-768_A-12"],
        name="local",
        files=files,
    )
    monkeypatch.setitem(registry.PRESETS, "local", preset)
    digests = {n: hashlib.sha256(d).hexdigest() for n, d in contents.items()}
    return contents, digests


def test_download_verifies_a_good_checksum(tmp_path, local_preset):
    contents, digests = local_preset
    dest = registry.download(
        "local", tmp_path / "model", sha256=digests, progress=False
    )
    for name, data in contents.items():
        assert (dest / name).read_bytes() == data
    assert registry.verify_files("local", dest) == dest


def test_download_rejects_a_bad_checksum(tmp_path, local_preset):
    _, digests = local_preset
    bad = {**digests, "pytorch_model.bin": "0" * 64}
    dest = tmp_path / "model"
    with pytest.raises(ValueError, match="does not match"):
        registry.download("local", dest, sha256=bad, progress=False)
    assert not (dest / "pytorch_model.bin").exists()
    assert not (dest / "pytorch_model.bin.part").exists()


def test_verify_files_names_what_is_missing(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="lacks pytorch_model.bin"):
        registry.verify_files("chinese_wwm_L-12_H-768_A-12", tmp_path)


def test_verify_files_accepts_the_tf_zip_layout(tmp_path):
    for name in registry.TF_FILES:
        (tmp_path / name).write_text("")
    registry.verify_files("chinese_L-12_H-768_A-12", tmp_path)


def test_download_instructions_name_every_file_and_the_release():
    text = registry.download_instructions("chinese_wwm_L-12_H-768_A-12")
    preset = registry.get("chinese_wwm_L-12_H-768_A-12")
    for file, remote in preset.files.items():
        assert f"{file}  {remote.url}" in text
    assert preset.original in text


def test_checksums_of_a_local_copy(tmp_path, local_preset):
    contents, digests = local_preset
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    assert registry.checksums("local", tmp_path) == digests


def test_checksums_reject_a_file_that_differs_from_a_known_digest(
    tmp_path, local_preset, monkeypatch
):
    contents, digests = local_preset
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    preset = registry.PRESETS["local"]
    files = {
        **preset.files,
        "vocab.txt": registry.RemoteFile("file:///vocab.txt", "0" * 64),
    }
    monkeypatch.setitem(
        registry.PRESETS, "local", dataclasses.replace(preset, files=files)
    )
    with pytest.raises(ValueError, match="vocab.txt: sha256 .* published"):
        registry.checksums("local", tmp_path)
