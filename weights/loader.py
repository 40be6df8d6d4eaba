"""Copy a checkpoint into a model built by `build_transformer_model`.

One loop over the model's variables finds each one's Google name, checks the
checkpoint has it with the same shape, and only then copies (nanoGPT's
`from_pretrained`): a checkpoint that does not fit leaves the model untouched
and raises one `CheckpointError` listing every problem at once.
"""

import logging
import re
import warnings

import numpy as np

from weights import formats
from weights import mapping

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message lists why."""


def load_checkpoint(model, path, keep_tokens=None, strict=True) -> None:
    """Load weights from any supported checkpoint into `model`.

    Args:
        model: a model from `build_transformer_model`.
        path: Google TF checkpoint prefix, `.safetensors`, `pytorch_model.bin`,
            a directory holding one of them, or Keras `.weights.h5` (our own
            saved weights, loaded with `model.load_weights`).
        keep_tokens: vocabulary rows to keep, as the model was built with;
            the checkpoint's word embeddings and MLM bias are sliced to them.
        strict: raise on missing variables and shape mismatches; with False
            they are warned about and the rest is loaded.
    """
    kind, path = formats.resolve(path)
    if kind == "keras":
        _load_keras_weights(model, path)
        return
    arrays = formats.read_checkpoint(path)
    stored = formats.read_keep_tokens(path)
    arrays = apply_keep_tokens(arrays, keep_tokens, path, stored)
    copy_weights(model, arrays, path, strict=strict, stored=stored)


def apply_keep_tokens(arrays, keep_tokens, source, stored=None):
    """Slice the vocabulary rows (the one place that does it).

    `stored` is the `keep_tokens` a file was saved with: its rows are already
    sliced, so the same list again is a no-op and a different one an error.
    """
    if keep_tokens is None:
        return arrays
    keep = np.asarray(keep_tokens, dtype=np.int64)
    if stored is not None:
        if np.array_equal(keep, stored):
            return arrays
        raise CheckpointError(
            f"{source} was saved with {len(stored)} keep_tokens that differ "
            f"from the {len(keep)} given; its rows are already sliced, so "
            "build the model with keep_tokens=weights.read_keep_tokens(path)"
        )
    sliced = dict(arrays)
    for name in mapping.VOCAB_ROWS:
        if name not in arrays:
            continue
        rows = arrays[name].shape[0]
        if keep.size and (keep.min() < 0 or keep.max() >= rows):
            raise CheckpointError(
                f"{name}: keep_tokens asks for row {keep.max()} but {source} "
                f"has {rows} rows (keep_tokens from another vocabulary?)"
            )
        sliced[name] = arrays[name][keep]
    return sliced


def copy_weights(model, arrays, source, strict=True, stored=None) -> None:
    """Check every variable against `arrays`, then copy them all."""
    problems, pairs, used = [], [], set()
    for variable in model.weights:
        name = mapping.keras_to_google(variable.path)
        if name is None:
            problems.append(f"{variable.path}: no checkpoint name known")
            continue
        used.add(name)
        if name not in arrays:
            if name in mapping.OPTIONAL:
                warnings.warn(
                    f"{name} is not in {source}: {variable.path} keeps its "
                    "initial zeros",
                    stacklevel=3,
                )
            else:
                problems.append(
                    f"{name}: missing from the checkpoint "
                    f"(model variable {variable.path})"
                )
            continue
        have, want = tuple(arrays[name].shape), tuple(variable.shape)
        if have != want:
            problem = f"{name}: checkpoint has {have}, model expects {want}"
            if stored is not None and name in mapping.VOCAB_ROWS:
                problem += (
                    f" (saved with {len(stored)} keep_tokens: build with "
                    "keep_tokens=weights.read_keep_tokens(path))"
                )
            problems.append(problem)
            continue
        pairs.append((variable, arrays[name]))
    _report(problems, source, model, strict)
    for variable, array in pairs:
        variable.assign(array)
    unexpected = sorted(set(arrays) - used)
    if unexpected:
        logger.info(
            "%s: %d variables not used by the model: %s",
            source,
            len(unexpected),
            ", ".join(unexpected),
        )


def _report(problems, source, model, strict):
    if not problems:
        return
    message = (
        f"cannot load {source} into {model.name}: {len(problems)} "
        "problem(s)\n  " + "\n  ".join(problems)
    )
    if strict:
        raise CheckpointError(message)
    warnings.warn(message + "\n(strict=False: loaded the rest)", stacklevel=4)


def _load_keras_weights(model, path):
    """Our own Keras weights, through `model.load_weights`.

    On a mismatch Keras has already loaded some layers and raises one long
    message with whole arrays in it, after a warning per skipped layer: put
    the old values back and say in one line what did not fit.
    """
    before = [variable.numpy() for variable in model.weights]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(str(path))
        except ValueError as error:
            failure = _keras_summary(str(error))
        else:
            failure = None
    if failure is None:
        for warning in caught:
            warnings.warn_explicit(
                warning.message,
                warning.category,
                warning.filename,
                warning.lineno,
            )
        return
    for variable, value in zip(model.weights, before):
        variable.assign(value)
    raise CheckpointError(f"cannot load {path} into {model.name}: {failure}")


def _keras_summary(text):
    """'N layers do not fit, e.g. PATH: file has A, model expects B'."""
    shapes = re.search(
        r"variable\.shape=(\(.*?\)), Received: value\.shape=(\(.*?\))\."
        r" Target variable: <Variable path=([^,]+)",
        text,
    )
    count = re.search(r"A total of (\d+) objects", text)
    if shapes is None:
        return text.splitlines()[0]
    want, have, path = shapes.groups()
    layers = f"{count.group(1)} layers do not fit, e.g. " if count else ""
    return f"{layers}{path}: file has {have}, model expects {want}"
