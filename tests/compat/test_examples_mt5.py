"""bert4keras's mT5 CSL title example, ported by the documented rewrite.

bert4keras's `examples/task_seq2seq_autotitle_csl_mt5.py` is run from
../shared/bert4keras_examples when it is there (skipped otherwise);
`tests/compat/examples/autotitle_csl_mt5.py`, a bert4keras script making
the same calls with the same settings names, always runs. Each is ported
by docs/porting.md's `sed` line and pointed at a tiny random mT5 in
Google's layout: a bert4keras-style `t5_config.json`, a SentencePiece
model trained on the CSL pairs (as bojone's reduced `sentencepiece_cn.model`)
and a `keep_tokens` JSON mapping its ids into the checkpoint's larger
vocabulary. As for the UniLM examples (`test_examples.py`), the script
trains one short epoch as `__main__`, then is imported (loading its saved
weights): same weights, same decoded titles, weights changed by training.
"""

import json
import shutil

import numpy as np
import pytest

from tests.checkpoints import hf_mt5
from tests.checkpoints import hf_t5_to_google_arrays
from tests.checkpoints import write_sentencepiece_model
from tests.checkpoints import write_tf_checkpoint
from tests.common import ROOT
from tests.compat.scripts import EXAMPLES
from tests.compat.scripts import port
from tests.compat.scripts import rewrite
from tests.compat.scripts import set_values
from tests.compat.scripts import train_then_import
from tests.compat.test_examples import assert_round_trip

ORIGINAL = "task_seq2seq_autotitle_csl_mt5.py"
OURS = ROOT / "tests" / "compat" / "examples" / "autotitle_csl_mt5.py"
# Checkpoint rows no SentencePiece id keeps.
EXTRA_ROWS = 37


def mt5_files(directory, rows, seed=0):
    """t5_config.json, a Google TF checkpoint, spm model, keep_tokens JSON.

    Every embedding row gets +10 in its first feature, so the decoder's
    final state is positive there whatever the tokens, and the output
    layer is zero but for the column of "的", which reads that feature:
    an untrained (or briefly trained) model writes "的" again and again,
    never the end token, so every decoded title shares a character with
    the references and the script's callback (which saves only when BLEU
    beats 0) always saves.
    """
    import sentencepiece

    directory.mkdir()
    spm = directory / "sentencepiece_cn.model"
    texts = [text for _, abstract, title in rows for text in (abstract, title)]
    write_sentencepiece_model(spm, texts, vocab_size=2000)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    size = processor.get_piece_size()
    rng = np.random.default_rng(seed)
    keep = [0, 1, 2] + [
        int(i) + 3 for i in rng.permutation(size - 3 + EXTRA_ROWS)[: size - 3]
    ]
    (directory / "keep_tokens.json").write_text(json.dumps(keep))
    hf_model = hf_mt5(
        seed,
        vocab_size=size + EXTRA_ROWS,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )
    arrays = hf_t5_to_google_arrays(hf_model)
    arrays["shared/embedding"][:, 0] += 10.0
    kernel = np.zeros_like(arrays["decoder/logits/kernel"])
    de = processor.piece_to_id("的")
    assert processor.id_to_piece(de) == "的"
    kernel[0, keep[de]] = 8.0
    arrays["decoder/logits/kernel"] = kernel
    write_tf_checkpoint(arrays, directory / "model.ckpt-1000")
    config = dict(
        hidden_size=16,
        intermediate_size=24,
        num_attention_heads=4,
        attention_head_size=4,
        num_hidden_layers=2,
        vocab_size=size + EXTRA_ROWS,
        hidden_act=["gelu", "linear"],
        hidden_dropout_prob=0.1,
        initializer_range=0.02,
    )
    (directory / "t5_config.json").write_text(json.dumps(config))
    return directory


def settings(checkpoint, data):
    root = "/root/kg/bert/mt5"
    files = {
        "mt5_base/t5_config": checkpoint / "t5_config.json",
        "mt5_base/model.ckpt-1000000": checkpoint / "model.ckpt-1000",
        "sentencepiece_cn.model": checkpoint / "sentencepiece_cn.model",
        "sentencepiece_cn_keep_tokens": checkpoint / "keep_tokens.json",
    }
    quote = "['\"]"
    paths = [
        (f"{quote}{root}/{name}(\\.json)?{quote}", repr(str(path)))
        for name, path in files.items()
    ]
    paths += [
        (f"{quote}/root/csl/{split}\\.tsv{quote}", repr(str(path)))
        for split, path in data.items()
    ]
    return paths + [
        (r"^max_c_len = 256$", "max_c_len = 64"),
        (r"^max_t_len = 32$", "max_t_len = 16"),
        (r"^batch_size = 16$", "batch_size = 4"),
        (r"^epochs = 40$", "epochs = 1"),
        (r"maxlen=32\)", "maxlen=8)"),
    ]


def run_ported(script, tmp_path, rows):
    data = {}
    for split, part in (("train", rows[:10]), ("val", rows[10:12])):
        data[split] = tmp_path / f"{split}.tsv"
        text = "".join(f"{title}\t{abstract}\n" for _, abstract, title in part)
        data[split].write_text(text, encoding="utf-8")
    data["test"] = data["val"]
    checkpoint = mt5_files(tmp_path / "mt5", rows[:12])
    set_values(script, settings(checkpoint, data))
    work = tmp_path / "work"
    work.mkdir()
    decode = (
        '[g["autotitle"].generate(content, topk) '
        'for topk in (1, 2) for title, content in g["valid_data"]]'
    )
    runs = train_then_import(script, work, decode, build='model="mt5.1.1",')
    assert (work / "best_model.weights.h5").is_file()
    assert "valid_data: {'rouge-1'" in runs["log"]
    assert_round_trip(runs, 4)
    assert any("的" in text for text in runs["trained"][0])


@pytest.mark.slow
def test_bert4keras_mt5_example(tmp_path, csl_rows):
    if not (EXAMPLES / ORIGINAL).is_file():
        pytest.skip(
            f"bert4keras's {ORIGINAL} is not in {EXAMPLES}: copy it there "
            "from bert4keras's examples/ to test its port"
        )
    pytest.importorskip("tensorflow")  # writes Google's TF checkpoint
    run_ported(port(ORIGINAL, tmp_path), tmp_path, csl_rows)


@pytest.mark.slow
def test_mt5_example_in_bert4keras_style(tmp_path, csl_rows):
    pytest.importorskip("tensorflow")  # writes Google's TF checkpoint
    script = tmp_path / OURS.name
    shutil.copyfile(OURS, script)
    text = rewrite(script).read_text(encoding="utf-8")
    assert "from compat.models import build_transformer_model" in text
    assert 'save_weights("./best_model.weights.h5")' in text
    run_ported(script, tmp_path, csl_rows)
