"""Pretraining: schedule, loss, trainer, and the script end to end."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data.vocab import SPECIAL_TOKENS
from tests.common import CSL_CORPUS
from tests.common import CSL_DEV
from tests.common import ROOT
from tests.common import TINY_PRETRAIN
from tests.common import TINY_PRETRAIN_ARGS
from tests.common import VOCAB_DIR
from tests.common import require_shared


def test_learning_rate_warms_up_then_decays_linearly():
    from models.pretraining import learning_rate

    def lr(step):
        return float(learning_rate(step, 1.0, 10, 110))

    assert lr(0) == pytest.approx(1 / 11)
    assert lr(4) < lr(5) < lr(9) < lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.5)
    assert lr(110) == pytest.approx(0.0) and lr(500) == pytest.approx(0.0)


def test_learning_rate_cosine_decay_and_floor():
    from models.pretraining import learning_rate

    def lr(step):
        return float(learning_rate(step, 1.0, 0, 100, "cosine", floor=0.1))

    assert lr(0) == pytest.approx(1.0)
    assert lr(50) == pytest.approx(0.55)
    assert lr(25) > 0.55 > lr(75)
    assert lr(100) == pytest.approx(0.1) and lr(1000) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown decay"):
        learning_rate(0, 1.0, 0, 10, "step")


def test_warmup_decay_is_a_keras_schedule():
    import keras

    from models.pretraining import WarmupDecay

    schedule = WarmupDecay(1e-3, 4, 20)
    optimizer = keras.optimizers.Adam(schedule)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3 / 5)
    again = WarmupDecay(**schedule.get_config())
    assert float(again(12)) == pytest.approx(float(schedule(12)))


def test_unilm_labels_give_the_seq2seq_loss():
    """The one pretraining loss on UniLM batches is the trainer's loss."""
    from keras import ops

    from data.pretraining import unilm_row
    from models.pretraining import masked_cross_entropy
    from models.trainer import seq2seq_cross_entropy

    rng = np.random.default_rng(0)
    rows = [
        unilm_row(rng.integers(5, 50, n), rng.integers(5, 50, m), 2, 3)
        for n, m in ((6, 3), (2, 7), (9, 1))
    ]
    width = max(len(row[0]) for row in rows)
    token_ids, segment_ids, labels = (
        np.stack([np.pad(row[k], (0, width - len(row[k]))) for row in rows])
        for k in range(3)
    )
    logits = rng.normal(size=(3, width, 50)).astype("float32")
    ours = masked_cross_entropy(labels, logits)
    theirs = seq2seq_cross_entropy(token_ids, segment_ids, logits)
    assert float(ops.convert_to_numpy(ours)) == pytest.approx(
        float(ops.convert_to_numpy(theirs)), rel=1e-5
    )


def test_masked_cross_entropy_scores_only_labelled_positions():
    from keras import ops

    from models.pretraining import masked_cross_entropy

    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]], "float32"))
    loss = masked_cross_entropy(np.array([[0, 2]]), logits)
    assert float(ops.convert_to_numpy(loss)) == pytest.approx(-np.log(0.8))


def tiny_batches(steps, ratio):
    from data.pretraining import PretrainingBatches
    from data.pretraining import cut_pairs
    from data.pretraining import pack_documents

    rng = np.random.default_rng(0)
    docs = [
        (rng.integers(5, 40, n).astype("int32"), np.ones(n, bool))
        for n in (20, 35, 12, 50)
    ]
    rows = pack_documents(docs, 16, 2, 3)
    pairs = [p for ids, _ in docs for p in cut_pairs(ids, rng, 9, 4)]
    masking = {"vocab_size": 40, "mask_id": 4, "special_ids": [1, 2, 3]}
    return PretrainingBatches(
        rows, pairs, steps, 4, 16, masking, 2, 3, unilm_ratio=ratio, seed=0
    )


def test_trainer_fits_mixed_batches_with_one_step_function():
    import keras

    from models import build_transformer_model
    from models.pretraining import PretrainingTrainer

    model = build_transformer_model(None, application="unilm", **TINY_PRETRAIN)
    trainer = PretrainingTrainer(model, seed=0)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = trainer.fit(tiny_batches(4, 0.5), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    with pytest.raises(ValueError, match="labels"):
        trainer.train_on_batch([np.ones((1, 4)), np.zeros((1, 4))])


def run_pretrain(out, *extra):
    from tasks.pretrain import main

    vocab = require_shared(VOCAB_DIR / "vocab.txt")
    text = require_shared(CSL_CORPUS / "abstracts.txt")
    titles = require_shared(CSL_CORPUS / "titles.txt")
    argv = [
        "--text",
        str(text),
        str(titles),
        "--whole-word",
        "--no-progress",
        "--out",
        str(out),
    ]
    for flag, value in TINY_PRETRAIN_ARGS.items():
        argv += [flag, str(value)]
    # An --init directory brings its own (simplified) vocabulary.
    if "--init" not in extra:
        argv += ["--vocab", str(vocab)]
    return main(argv + list(extra))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One short run of the script: 32 steps, checkpoint at 16 and 32."""
    out = tmp_path_factory.mktemp("pretrain")
    exported = run_pretrain(out, "--steps", "32", "--checkpoint-every", "16")
    return out, exported


def read_log(out):
    lines = (out / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_pretraining_lowers_both_losses(pretrained):
    log = read_log(pretrained[0])
    assert [entry["step"] for entry in log] == [8, 16, 24, 32]
    for name in ("mlm_loss", "unilm_loss"):
        curve = [entry[name] for entry in log if name in entry]
        assert curve[-1] < curve[0] - 0.5, (name, curve)
    assert all(entry["tokens_per_s"] > 0 for entry in log)


@pytest.mark.slow
def test_export_is_a_model_directory(pretrained):
    import keras

    from data import load_vocab
    from models import build_transformer_model
    from models.config import BertConfig

    out, exported = pretrained
    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json",
        "model.safetensors",
        "vocab.txt",
    ]
    config = BertConfig.from_json(exported)
    token_dict = load_vocab(str(exported / "vocab.txt"))
    assert config.vocab_size == len(token_dict)
    # Simplifying the simplified vocabulary again changes nothing.
    again, keep_tokens = load_vocab(
        str(exported / "vocab.txt"), simplified=True, startswith=SPECIAL_TOKENS
    )
    assert again == token_dict
    assert keep_tokens == list(range(len(token_dict)))
    # The safetensors reload into a fresh model: same outputs as the last
    # checkpoint of the run.
    model = build_transformer_model(exported, exported, application="unilm")
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    trained = build_transformer_model(exported, application="unilm")
    trained.load_weights(str(out / state["checkpoint"]["weights"]))
    inputs = [np.array([[2, 100, 200, 300, 3]]), np.zeros((1, 5), "int32")]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(inputs)),
        keras.ops.convert_to_numpy(trained(inputs)),
        atol=1e-6,
    )


@pytest.mark.slow
def test_the_same_command_resumes_after_the_last_checkpoint(
    pretrained, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(pretrained[0], out)
    run_pretrain(out, "--steps", "40", "--checkpoint-every", "16")
    state = json.loads((out / "state.json").read_text(encoding="utf-8"))
    assert state["step"] == 40
    assert state["checkpoint"] == {
        "weights": "step-40.weights.h5",
        "optimizer": "step-40.optimizer.npz",
        "random": "step-40.random.npz",
        "state": "step-40.state.json",
    }
    assert [entry["step"] for entry in read_log(out)] == [8, 16, 24, 32, 40]
    assert sorted(p.name for p in out.glob("step-*")) == [
        "step-40.optimizer.npz",
        "step-40.random.npz",
        "step-40.state.json",
        "step-40.weights.h5",
    ]
    with pytest.raises(SystemExit):
        run_pretrain(out, "--steps", "40", "--mask-rate", "0.2")


@pytest.mark.slow
def test_csl_title_fine_tunes_from_the_export(pretrained, tmp_path):
    data = require_shared(CSL_DEV)
    command = [
        sys.executable,
        "tasks/csl_title.py",
        "--model-dir",
        str(pretrained[1]),
        "--data",
        str(data),
        "--limit",
        "60",
        "--epochs",
        "1",
        "--beams",
        "1",
        "--maxlen",
        "96",
        "--title-maxlen",
        "12",
        "--no-progress",
        "--out",
        str(tmp_path / "csl"),
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(
        (tmp_path / "csl" / "results.json").read_text(encoding="utf-8")
    )
    assert set(results["test"]) == {"1"}


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_max_predictions_gives_the_full_loss(ratio):
    """Running the head at `max_labels` positions only changes no loss."""
    from keras import ops

    from models import build_transformer_model
    from models.pretraining import PretrainingTrainer

    model = build_transformer_model(None, application="unilm", **TINY_PRETRAIN)
    batches = tiny_batches(3, ratio)
    full = PretrainingTrainer(model)
    gathered = PretrainingTrainer(model, max_predictions=batches.max_labels)
    assert batches.max_labels < 16
    for step in range(3):
        labels = batches[step][1]
        assert (labels != 0).sum(axis=1).max() <= batches.max_labels
        losses = []
        for trainer in (full, gathered):
            unpacked = trainer.unpack_batch(batches[step])
            loss, _ = trainer.compute_losses(*unpacked, training=False)
            losses.append(float(ops.convert_to_numpy(loss)))
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_init_from_a_full_vocabulary_checkpoint_keeps_its_rows(tmp_path):
    """A Google-named checkpoint of all 21,128 rows is sliced once, [MASK]
    row included, so the model continues from the pretrained embeddings."""
    import keras

    from models import build_transformer_model
    from tasks.lib import pretraining_run
    from tasks.lib.pretraining_options import build_parser
    from weights import save_safetensors

    vocab = require_shared(VOCAB_DIR / "vocab.txt")
    original = build_transformer_model(
        None, application="unilm", **{**TINY_PRETRAIN, "vocab_size": 21128}
    )
    original.bert_config.save(tmp_path / "bert_config.json")
    save_safetensors(original, tmp_path / "model.safetensors")
    shutil.copy(vocab, tmp_path / "vocab.txt")
    args = build_parser("t").parse_args(
        ["--text", "unused.txt", "--init", str(tmp_path)]
    )
    config, checkpoint, vocab_path = pretraining_run.model_paths(args)
    token_dict, keep_tokens = pretraining_run.load_simplified_vocab(vocab_path)
    model = pretraining_run.build_model(
        config, checkpoint, keep_tokens, "float32"
    )
    assert token_dict["[MASK]"] == 4 and keep_tokens[4] == 103
    rows = keras.ops.convert_to_numpy(
        original.get_layer("Embedding-Token").embeddings
    )
    kept = keras.ops.convert_to_numpy(
        model.get_layer("Embedding-Token").embeddings
    )
    np.testing.assert_array_equal(kept, rows[keep_tokens])


@pytest.mark.slow
def test_pretraining_continues_from_an_exported_directory(pretrained, tmp_path):
    out, exported = pretrained
    run_pretrain(
        tmp_path / "again",
        "--init",
        str(exported),
        "--steps",
        "4",
        "--log-every",
        "4",
        "--objective",
        "mlm",
    )
    first = read_log(tmp_path / "again")[0]["mlm_loss"]
    # A fresh model starts near ln(13585) = 9.5: this one starts where the
    # first run ended.
    assert first < read_log(out)[0]["mlm_loss"] - 0.5


@pytest.mark.slow
def test_fp16_training_scales_its_loss():
    """fp16 gradients underflow without loss scaling: the script wraps the
    optimizer, and a step gives a finite loss."""
    import keras

    from models import build_transformer_model
    from tasks.lib.pretraining_options import build_parser
    from tasks.lib.pretraining_run import make_trainer

    model = build_transformer_model(
        None, application="unilm", dtype="mixed_float16", **TINY_PRETRAIN
    )
    args = build_parser("t").parse_args(
        ["--text", "unused.txt", "--steps", "2"]
    )
    batches = tiny_batches(2, 0.5)
    trainer = make_trainer(model, args, "fp16", batches.max_labels)
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    for step in range(2):
        logs = trainer.train_on_batch(*batches[step], return_dict=True)
        assert np.isfinite(logs["loss"])
