"""bert4keras 0.11's own UniLM examples, ported by the documented rewrite.

Each test copies a script from ../shared/bert4keras_examples, applies the
`sed` line of docs/porting.md, points its paths and sizes at a tiny random
checkpoint in Google's layout (vocabulary: the real Chinese one) and a few
real CSL pairs or made-up QA records, and runs it twice in subprocesses:
as `__main__` (one short epoch; the script's callback saves
`best_model.weights.h5`), then imported (which loads those weights). Both
runs decode the same inputs with the script's own `AutoRegressiveDecoder`
subclass. The imported run must have exactly the trained weights and
decode exactly the same texts, and the weights must differ from the
checkpoint's.
"""

import json

import numpy as np
import pytest

from tests.common import VOCAB_DIR
from tests.common import require_shared
from tests.compat.scripts import EXAMPLES
from tests.compat.scripts import port
from tests.compat.scripts import set_values
from tests.compat.scripts import train_then_import


def model_paths(checkpoint, bert_dir):
    vocab = str(require_shared(VOCAB_DIR / "vocab.txt"))
    return [
        (
            rf"'{bert_dir}/bert_config\.json'",
            repr(str(checkpoint / "bert_config.json")),
        ),
        (
            rf"'{bert_dir}/bert_model\.ckpt'",
            repr(str(checkpoint / "bert_model.ckpt")),
        ),
        (rf"'{bert_dir}/vocab\.txt'", repr(vocab)),
    ]


def assert_round_trip(runs, count):
    (trained_text, trained), (imported_text, imported) = (
        runs["trained"],
        runs["imported"],
    )
    assert len(trained_text) == count and all(trained_text)
    assert imported_text == trained_text
    assert len(imported) == len(trained) == len(runs["fresh"])
    for saved, loaded in zip(trained, imported):
        np.testing.assert_array_equal(saved, loaded)
    changed = [not np.array_equal(a, b) for a, b in zip(trained, runs["fresh"])]
    assert sum(changed) > len(changed) // 2, "training changed few weights"


@pytest.mark.slow
def test_task_seq2seq_autotitle_csl(tmp_path, checkpoint, csl_rows):
    data = tmp_path / "data"
    data.mkdir()
    splits = {
        "train": csl_rows[:10],
        "val": csl_rows[10:12],
        "test": csl_rows[12:14],
    }
    for split, rows in splits.items():
        text = "".join(f"{title}\t{abstract}\n" for _, abstract, title in rows)
        (data / f"{split}.tsv").write_text(text, encoding="utf-8")
    script = port("task_seq2seq_autotitle_csl.py", tmp_path)
    bert = "/root/kg/bert/chinese_wwm_L-12_H-768_A-12"
    set_values(
        script,
        model_paths(checkpoint, bert)
        + [
            (r"^maxlen = 256$", "maxlen = 64"),
            (r"^batch_size = 16$", "batch_size = 4"),
            (r"^epochs = 20$", "epochs = 1"),
            (r"maxlen=32\)", "maxlen=8)"),
        ]
        + [
            (rf"'/root/csl/{split}\.tsv'", repr(str(data / f"{split}.tsv")))
            for split in splits
        ],
    )
    work = tmp_path / "work"
    work.mkdir()
    decode = (
        '[g["autotitle"].generate(content, topk) '
        'for topk in (1, 2) for title, content in g["valid_data"]]'
    )
    runs = train_then_import(script, work, decode)
    assert (work / "best_model.weights.h5").is_file()
    assert "valid_data: {'rouge-1'" in runs["log"]
    assert_round_trip(runs, 4)


def qa_records(csl_rows):
    """WebQA-style records: a passage, an answer inside it, a question."""
    records = []
    for _, abstract, title in csl_rows[:12]:
        passages = [
            {"passage": abstract[:150], "answer": abstract[10:16]},
            {"passage": abstract[150:220], "answer": ""},
        ]
        records.append({"question": f"{title}讲了什么？", "passages": passages})
    return records


@pytest.mark.slow
def test_task_question_answer_generation_by_seq2seq(
    tmp_path, checkpoint, csl_rows
):
    records = qa_records(csl_rows)
    for name, part in (("WebQA", records[:6]), ("SogouQA", records[6:])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(part, ensure_ascii=False), "utf-8")
    script = port("task_question_answer_generation_by_seq2seq.py", tmp_path)
    bert = "/root/kg/bert/chinese_L-12_H-768_A-12"
    set_values(
        script,
        model_paths(checkpoint, bert)
        + [
            (r"^max_p_len = 128$", "max_p_len = 48"),
            (r"^max_q_len = 64$", "max_q_len = 8"),
            (r"^max_a_len = 16$", "max_a_len = 6"),
            (r"^batch_size = 32$", "batch_size = 4"),
            (r"^epochs = 100$", "epochs = 1"),
            (r"steps_per_epoch=1000", "steps_per_epoch=2"),
        ]
        + [
            (
                rf"'/root/qa_datasets/{name}\.json'",
                repr(str(tmp_path / f"{name}.json")),
            )
            for name in ("WebQA", "SogouQA")
        ],
    )
    work = tmp_path / "work"
    work.mkdir()
    decode = '[list(g["qag"].generate(d[0])) for d in g["valid_data"]]'
    runs = train_then_import(script, work, decode)
    assert (work / "best_model.weights.h5").is_file()
    assert (tmp_path / "random_order.json").is_file()
    assert_round_trip(runs, 2)


def test_rewrite_touches_only_imports_and_weights_names(tmp_path):
    require_shared(EXAMPLES)
    for name in sorted(p.name for p in EXAMPLES.glob("*.py")):
        original = (EXAMPLES / name).read_text(encoding="utf-8").splitlines()
        ported = port(name, tmp_path).read_text(encoding="utf-8").splitlines()
        assert len(ported) == len(original)
        changed = [(a, b) for a, b in zip(original, ported) if a != b]
        assert changed
        for before, after in changed:
            if "bert4keras" in before:
                assert after == before.replace(
                    "from bert4keras.", "from compat."
                )
            else:
                assert after == before.replace(".weights'", ".weights.h5'")
        assert not any("bert4keras." in line for line in ported)
