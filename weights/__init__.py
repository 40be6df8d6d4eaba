"""Checkpoints: read Google / Hugging Face / our own files, load, save.

`load_checkpoint(model, path)` fills a model from `build_transformer_model`;
`read_checkpoint(path)` gives `{google_name: array}`; `save_safetensors`
writes the Google-named safetensors that `python -m weights.convert` makes.
"""

import importlib

# The readers and the loader import NumPy (and, for a file of theirs,
# TensorFlow or torch): load them on first use, so that a command line
# listing `weights.registry.PRESETS` answers at once.
_LAZY = {
    "CheckpointError": "weights.loader",
    "load_checkpoint": "weights.loader",
    "read_checkpoint": "weights.formats",
    "read_keep_tokens": "weights.formats",
    "save_safetensors": "weights.formats",
}

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint",
    "read_keep_tokens",
    "save_safetensors",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'weights' has no attribute {name!r}")
