"""Porting a bert4keras script at test time, and running it in a subprocess.

The rewrite is the `sed` line of docs/porting.md, read from the page and
run as documented, so the tests check the line users are told to run.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np

from tests.checkpoints import randomize
from tests.checkpoints import write_tf_checkpoint
from tests.common import ROOT
from tests.common import SHARED
from tests.common import TINY
from tests.common import VOCAB_DIR

EXAMPLES = SHARED / "bert4keras_examples"
PORTING = ROOT / "docs" / "porting.md"
PLACEHOLDER = " script.py"


def documented_rewrite() -> str:
    """The one `sed` line of docs/porting.md (the README shows it too)."""
    lines = [
        line
        for line in PORTING.read_text(encoding="utf-8").splitlines()
        if line.startswith("sed ")
    ]
    assert len(lines) == 1, f"expected one sed line in {PORTING}: {lines}"
    assert lines[0].endswith(PLACEHOLDER)
    return lines[0]


def port(name: str, directory: pathlib.Path) -> pathlib.Path:
    """Copy a shared example and apply the documented rewrite to the copy."""
    target = directory / name
    shutil.copyfile(EXAMPLES / name, target)
    return rewrite(target)


def port_text(text: str, target: pathlib.Path) -> pathlib.Path:
    """Write a bert4keras script and apply the documented rewrite."""
    target.write_text(text, encoding="utf-8")
    return rewrite(target)


def rewrite(target: pathlib.Path) -> pathlib.Path:
    command = documented_rewrite()[: -len(PLACEHOLDER)]
    subprocess.run(
        ["bash", "-c", f"{command} {shlex.quote(str(target))}"], check=True
    )
    assert "bert4keras." not in target.read_text(encoding="utf-8")
    return target


def set_values(path: pathlib.Path, replacements: list[tuple[str, str]]):
    """Point paths and sizes elsewhere; each pattern must match once."""
    text = path.read_text(encoding="utf-8")
    for pattern, value in replacements:
        text, count = re.subn(pattern, lambda _: value, text, flags=re.M)
        assert count == 1, f"{pattern!r} matched {count} times in {path}"
    path.write_text(text, encoding="utf-8")


def write_checkpoint(directory: pathlib.Path, vocab_size: int, seed=0):
    """A tiny random BERT in Google's layout: bert_config.json + TF ckpt.

    Its MLM bias makes an untrained model write "的" again and again: never
    a bracketed token ([SEP], [UNK], [unused1], ... get -10), so a decoded
    title is never empty, and "的" (+8) is in most Chinese titles, so the
    CSL script's callback, which saves only when BLEU beats 0 (nltk scores
    0 without one common character), always saves.
    """
    from models import build_transformer_model
    from weights.formats import model_arrays

    config = dict(
        TINY,
        vocab_size=vocab_size,
        max_position_embeddings=128,
        type_vocab_size=2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        initializer_range=0.02,
    )
    model = build_transformer_model(dict(config), application="unilm")
    randomize(model, seed)
    arrays = model_arrays(model)
    vocab = (VOCAB_DIR / "vocab.txt").read_text(encoding="utf-8").split("\n")
    bracketed = [i for i, t in enumerate(vocab) if re.fullmatch(r"\[.+\]", t)]
    bias = arrays["cls/predictions/output_bias"]
    bias[bracketed] = -10.0
    bias[vocab.index("的")] = 8.0
    directory.mkdir(parents=True, exist_ok=True)
    write_tf_checkpoint(arrays, directory / "bert_model.ckpt")
    (directory / "bert_config.json").write_text(json.dumps(config))
    return directory


# Run as `__main__` (training), then dump what the script decodes and its
# model's weights. `DECODE` is an expression over the script's globals `g`.
_MAIN = """
import json, runpy, sys
import numpy as np
g = runpy.run_path({script!r}, run_name="__main__")
np.random.seed(0)
decoded = {decode}
np.savez({weights!r}, *g["model"].get_weights())
json.dump(decoded, open({out!r}, "w", encoding="utf-8"), ensure_ascii=False)
"""

# Import the script as a module (it loads its saved weights), decode the
# same inputs, dump its weights and a fresh model's from the checkpoint.
_IMPORTED = """
import importlib, json, sys
import numpy as np
sys.path.insert(0, {directory!r})
g = vars(importlib.import_module({module!r}))
np.random.seed(0)
decoded = {decode}
np.savez({weights!r}, *g["model"].get_weights())
from compat.models import build_transformer_model
fresh = build_transformer_model(
    g["config_path"], g["checkpoint_path"], keep_tokens=g["keep_tokens"],
    {build}
)
np.savez({fresh!r}, *fresh.get_weights())
json.dump(decoded, open({out!r}, "w", encoding="utf-8"), ensure_ascii=False)
"""


def run_python(code: str, cwd: pathlib.Path, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def train_then_import(
    script: pathlib.Path,
    cwd: pathlib.Path,
    decode: str,
    build: str = 'application="unilm",',
):
    """Both runs of a ported script; returns what each decoded and saved.

    `build`: the keywords that build a fresh model like the script's, from
    its checkpoint, to compare weights with."""
    out = cwd.parent
    first = run_python(
        _MAIN.format(
            script=str(script),
            decode=decode,
            weights=str(out / "trained.npz"),
            out=str(out / "trained.json"),
        ),
        cwd,
    )
    run_python(
        _IMPORTED.format(
            directory=str(script.parent),
            module=script.stem,
            decode=decode,
            weights=str(out / "imported.npz"),
            fresh=str(out / "fresh.npz"),
            out=str(out / "imported.json"),
            build=build,
        ),
        cwd,
    )
    return {
        "log": first.stdout + first.stderr,
        "trained": _load(out / "trained"),
        "imported": _load(out / "imported"),
        "fresh": _arrays(out / "fresh.npz"),
    }


def _load(stem: pathlib.Path):
    decoded = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    return decoded, _arrays(stem.with_suffix(".npz"))


def _arrays(path):
    with np.load(path) as stored:
        return [stored[f"arr_{i}"] for i in range(len(stored.files))]
