"""Checkpoints: read Google / Hugging Face / our own files, load, save.

`load_checkpoint(model, path)` fills a model from `build_transformer_model`;
`read_checkpoint(path)` gives `{google_name: array}`; `save_safetensors`
writes the Google-named safetensors that `python -m weights.convert` makes.
"""

from weights.formats import read_checkpoint
from weights.formats import read_keep_tokens
from weights.formats import save_safetensors
from weights.loader import CheckpointError
from weights.loader import load_checkpoint

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint",
    "read_keep_tokens",
    "save_safetensors",
]
