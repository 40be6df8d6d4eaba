"""bert4keras 0.11's own pure-Python modules, run as test oracles.

The README's set-up command (and `.ci/run`) installs bert4keras 0.11.5
without its dependencies (it pins `keras<=2.3.1`, which cannot sit beside
Keras 3). Only `snippets.py` and
`tokenizers.py` are executed here, with `bert4keras.backend` (TensorFlow 1
and Keras 2) replaced by an empty stub: the tokenizer, the text helpers
and the decoding loops used as references never touch it. The modules are
loaded under private names and removed from `sys.modules` again, so
nothing else can import them by accident. Tests skip when bert4keras is
not installed.
"""

import functools
import importlib.util
import pathlib
import sys
import types

import pytest

VERSION = "0.11.5"
_NAMES = ("bert4keras", "bert4keras.backend", "bert4keras.snippets", "six")


def source_dir() -> pathlib.Path:
    """Where the installed bert4keras lives, found without importing it."""
    spec = importlib.util.find_spec("bert4keras")
    if spec is None or spec.origin is None:
        pytest.skip(
            f"bert4keras {VERSION} is not installed (the README's set-up "
            "command installs it with --no-deps as a test oracle)"
        )
    return pathlib.Path(spec.origin).parent


@functools.lru_cache(maxsize=None)
def _load():
    root = source_dir()
    saved = {name: sys.modules.get(name) for name in _NAMES}
    try:
        package = types.ModuleType("bert4keras")
        package.__path__ = [str(root)]
        backend = types.ModuleType("bert4keras.backend")
        backend.K = backend.keras = backend.tf = None
        sys.modules["bert4keras"] = package
        sys.modules["bert4keras.backend"] = backend
        if importlib.util.find_spec("six") is None:
            six = types.ModuleType("six")
            six.PY2 = False
            sys.modules["six"] = six
        snippets = _exec("bert4keras.snippets", root / "snippets.py")
        tokenizers = _exec("bert4keras.tokenizers", root / "tokenizers.py")
        version = (root / "__init__.py").read_text(encoding="utf-8")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        sys.modules.pop("bert4keras.tokenizers", None)
    assert f"'{VERSION}'" in version, f"expected bert4keras {VERSION}"
    return types.SimpleNamespace(snippets=snippets, tokenizers=tokenizers)


def _exec(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    # snippets.py swaps itself for a lazy `Hook` in sys.modules; return that.
    return sys.modules[name]


def snippets():
    """bert4keras.snippets (decoder loops, padding, text helpers)."""
    return _load().snippets


def tokenizers():
    """bert4keras.tokenizers (Tokenizer, load_vocab)."""
    return _load().tokenizers
