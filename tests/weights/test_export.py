"""`python -m weights.export`: a model handed to Hugging Face transformers.

Each kind of source (a run directory, a model directory, a `.keras` file)
is exported from a random tiny UniLM model built with keep_tokens;
`BertForMaskedLM.from_pretrained` must load it with no missing, unexpected
or mismatched weights and give our logits under the UniLM mask (a 4-D
additive mask built by explicit loops in tests/checkpoints.py), and
vocab.txt must be the kept tokens in row order.
"""

import io
import json
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from data import Tokenizer
from data.vocab import SEQ2SEQ_TOKENS
from data.vocab import load_vocab
from models import build_transformer_model
from tests.checkpoints import hf_run
from tests.checkpoints import tiny_model
from tests.checkpoints import unilm_mask
from tests.common import ROOT
from tests.common import TINY
from tests.common import TINY_TASK_ARGS
from tests.common import mixed_batch
from weights import formats
from weights import mapping
from weights import save_safetensors
from weights.export import main
from weights.formats import model_arrays

TOLERANCE = 1e-4  # logits, float32, two implementations


def write_vocab(path, rows=150):
    """A vocabulary whose simplified form keeps TINY's 128 rows."""
    # Dropped: [MASK] (a bracket in a longer token), CJK stems.
    tokens = [*SEQ2SEQ_TOKENS, "[MASK]"]
    tokens += [f"##词{i}" for i in range(rows - 129)]
    tokens += [f"tok{i}" for i in range(rows - len(tokens))]
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    token_dict, keep = load_vocab(
        str(path), simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    assert len(keep) == TINY["vocab_size"]
    return sorted(token_dict, key=token_dict.get), keep


@pytest.fixture
def model_and_vocab(tmp_path):
    tokens, keep = write_vocab(tmp_path / "full_vocab.txt")
    model = tiny_model("unilm", seed=5, keep_tokens=keep)
    return model, tokens, keep


def run_directory(tmp_path, model, **settings):
    """What tasks/csl_title.py leaves: settings, best weights."""
    run = tmp_path / "run"
    run.mkdir()
    defaults = {"model_dir": None, "config": None, "vocab": None}
    defaults.update(heads=4, dropout=0.0, no_simplify=False, task="t")
    text = json.dumps({**defaults, **settings})
    (run / "config.json").write_text(text, encoding="utf-8")
    model.save_weights(run / "best.weights.h5")
    return run


def model_directory(tmp_path, model, keep):
    """pretrain.py's layout, our safetensors holding keep_tokens."""
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    config = dict(TINY, vocab_size=150, hidden_dropout_prob=0.1)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "vocab.txt").write_bytes(
        (tmp_path / "full_vocab.txt").read_bytes()
    )
    save_safetensors(model, directory / "model.safetensors", keep)
    return directory


def keras_file(tmp_path, model):
    path = tmp_path / "saved" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "vocab.txt").write_bytes(
        (tmp_path / "full_vocab.txt").read_bytes()
    )
    return path


def test_keras_weights_read_by_name(tmp_path):
    """Weights files and `.keras` archives (optimizer state inside) give
    the model's Google-named arrays, with no model built."""
    model = tiny_model("unilm", seed=2)
    expected = model_arrays(model)
    model.save_weights(tmp_path / "m.weights.h5")
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        inside = io.BytesIO(archive.read("model.weights.h5"))
    for arrays in (
        formats.read_keras_weights(tmp_path / "m.weights.h5"),
        formats.read_keras_weights(inside),
    ):
        assert sorted(arrays) == sorted(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(arrays[name], array, name)


def test_google_names_map_to_transformers_and_back():
    names = sorted(model_arrays(tiny_model("unilm")))
    hf_names = [mapping.google_to_hf(name) for name in names]
    assert all(name.startswith(("bert.", "cls.")) for name in hf_names)
    assert [mapping.hf_to_google(name) for name in hf_names] == names
    assert mapping.google_to_hf("bert/pooler/dense/kernel") is None


def export(source, out, *extra):
    main([str(source), str(out), *extra])
    return out


def our_logits(model):
    token_ids, segment_ids = mixed_batch()
    logits = model.bert_network(token_ids, segment_ids, output="logits")
    return keras.ops.convert_to_numpy(logits)


def check_transformers_loads(out, model, tokens):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    hf, info = transformers.BertForMaskedLM.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert {key: list(value) for key, value in info.items()} == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
        "error_msgs": [],
    }
    token_ids, segment_ids = mixed_batch()
    mask = unilm_mask(token_ids, segment_ids)
    theirs = hf_run(hf.eval(), token_ids, segment_ids, mask).logits.numpy()
    keep = token_ids != 0
    ours = our_logits(model)
    assert np.abs(ours[keep] - theirs[keep]).max() < TOLERANCE
    assert (out / "vocab.txt").read_text("utf-8").splitlines() == tokens


@pytest.mark.parametrize("source", ["run", "model-dir", "keras"])
def test_export_loads_in_transformers_with_our_logits(
    source, model_and_vocab, tmp_path
):
    model, tokens, keep = model_and_vocab
    if source == "run":
        run = run_directory(tmp_path, model)
        (run / "vocab.txt").write_bytes(
            (tmp_path / "full_vocab.txt").read_bytes()
        )
        path = run
    elif source == "model-dir":
        path = model_directory(tmp_path, model, keep)
    else:
        path = keras_file(tmp_path, model)
    out = export(path, tmp_path / "hf")
    check_transformers_loads(out, model, tokens)
    config = json.loads((out / "config.json").read_text("utf-8"))
    assert config["vocab_size"] == 128 and config["num_hidden_layers"] == 2
    assert config["architectures"] == ["BertForMaskedLM"]


def test_run_of_a_checkpoint_uses_its_config_and_vocab(
    model_and_vocab, tmp_path
):
    """A fine-tuned run names its model directory; the kept rows are the
    run's simplified vocabulary, the config the directory's."""
    model, tokens, keep = model_and_vocab
    directory = model_directory(tmp_path, model, keep)
    run = run_directory(tmp_path, model, model_dir=str(directory), heads=1)
    out = export(run, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text("utf-8"))
    assert config["num_attention_heads"] == 4  # the directory's, not 1
    assert config["hidden_dropout_prob"] == 0.1
    check_transformers_loads(out, model, tokens)


def test_whole_vocabulary_run(tmp_path):
    """--no-simplify: every row, vocab.txt as it was."""
    tokens = [*SEQ2SEQ_TOKENS] + [f"词{i}" for i in range(124)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    model = tiny_model("unilm", seed=6)
    run = run_directory(tmp_path, model, vocab=str(vocab), no_simplify=True)
    out = export(run, tmp_path / "hf")
    check_transformers_loads(out, model, tokens)


def test_export_loads_back_into_our_model(model_and_vocab, tmp_path):
    """The export is also a model directory of this toolkit."""
    model, _, _ = model_and_vocab
    out = export(keras_file(tmp_path, model), tmp_path / "hf")
    again = build_transformer_model(out, out, application="unilm")
    np.testing.assert_allclose(
        our_logits(again), our_logits(model), rtol=0, atol=1e-5
    )


def error_of(capsys, *argv):
    with pytest.raises(SystemExit) as stop:
        main([str(arg) for arg in argv])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error: ")
    return lines[0]


def test_bad_sources_are_one_line_errors(model_and_vocab, tmp_path, capsys):
    model, _, keep = model_and_vocab
    out = tmp_path / "hf"
    assert "not a directory" in error_of(capsys, tmp_path / "nowhere", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json or bert_config.json" in error_of(capsys, empty, out)
    directory = model_directory(tmp_path, model, keep)
    (directory / "model.safetensors").unlink()
    assert "no checkpoint in" in error_of(capsys, directory, out)
    assert "not an empty directory" in error_of(capsys, directory, directory)
    assert "required" in error_of(capsys, directory)
    run = run_directory(tmp_path, model, model_dir=str(tmp_path / "gone"))
    assert "model_dir" in error_of(capsys, run, out)
    (run / "config.json").write_text('{"task": "t"}', encoding="utf-8")
    assert "not the settings of a" in error_of(capsys, run, out)


def test_wrong_vocabulary_and_missing_head_are_named(tmp_path, capsys):
    model = tiny_model("unilm", seed=1)
    run = run_directory(tmp_path, model)
    short = tmp_path / "short.txt"
    short.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n", encoding="utf-8")
    message = error_of(capsys, run, tmp_path / "a", "--vocab", short)
    assert "5 tokens for 128 embedding rows" in message
    encoder = tiny_model("encoder", seed=1)
    path = tmp_path / "encoder" / "model.keras"
    path.parent.mkdir()
    encoder.save(path)
    message = error_of(capsys, path, tmp_path / "b", "--vocab", short)
    assert "MLM head" in message


def test_help_answers_without_keras():
    code = (
        "import sys\n"
        "from weights.export import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m weights.export" in result.stdout
    assert "(default: None)" in result.stdout


@pytest.mark.slow
def test_a_finished_run_exports(tmp_path, vocab_path, csl_dev_path):
    """A real run of tasks/csl_title.py (the Chinese vocabulary, kept
    rows): transformers gives the logits of the run's best weights, and
    its tokenizer our ids."""
    transformers = pytest.importorskip("transformers")
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "tasks" / "csl_title.py")]
    command += ["--data", str(csl_dev_path), "--vocab", str(vocab_path)]
    command += ["--limit", "40", "--epochs", "1", "--beams", "1"]
    command += ["--out", str(run), *TINY_TASK_ARGS]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = export(run, tmp_path / "hf")
    model = build_transformer_model(out / "config.json", application="unilm")
    model.load_weights(run / "best.weights.h5")  # Keras's own reading
    token_dict, _ = load_vocab(
        str(vocab_path), simplified=True, startswith=SEQ2SEQ_TOKENS
    )
    check_transformers_loads(out, model, sorted(token_dict, key=token_dict.get))
    theirs = transformers.BertTokenizer.from_pretrained(out)
    ours = Tokenizer(token_dict, do_lower_case=True)
    for line in csl_dev_path.read_text("utf-8").splitlines()[:20]:
        text = line.split("\t")[1]
        assert theirs(text)["input_ids"] == ours.encode(text)[0]


def test_roformer_is_refused_in_one_line(tmp_path, capsys):
    model = tiny_model("unilm", seed=1, model="roformer")
    path = tmp_path / "roformer" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"t{i}\n" for i in range(128)), encoding="utf-8")
    message = error_of(capsys, path, tmp_path / "hf", "--vocab", vocab)
    assert "a roformer model: only BERT-family models export" in message
