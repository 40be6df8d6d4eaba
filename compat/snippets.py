"""bert4keras.snippets on Keras 3: data feeding, decoding and text helpers.

- `DataGenerator`: subclass it and write `__iter__(self, random=False)`
  yielding batches (or samples, for `to_dataset`); `forfit()` feeds
  Keras 3's `fit` directly.
- `AutoRegressiveDecoder`: `models.decoding`'s, which has bert4keras 0.11's
  `wraps`, `last_token`, `beam_search` and `random_sample`; here with
  `set_rtype` for older scripts and a `last_token` model whose `predict`
  is silent, as Keras 2's was.
- `WebServing`: bert4keras's web endpoint helper, on Starlette and
  uvicorn (`compat.serving`).
- `sequence_padding`, `truncate_sequences`, `text_segmentate`, `open`,
  `softmax`, `to_array`, `is_string`, `lowercase_and_normalize`.
"""

import builtins
import itertools

import keras
import numpy as np

from compat._unsupported import module_getattr
from compat._unsupported import unsupported
from compat.serving import WebServing
from data.batching import sequence_padding
from data.tokenizer import lowercase
from data.tokenizer import truncate_sequences
from models.decoding import AutoRegressiveDecoder as _Decoder

__all__ = [
    "AutoRegressiveDecoder",
    "DataGenerator",
    "WebServing",
    "is_string",
    "lowercase_and_normalize",
    "open",
    "sequence_padding",
    "softmax",
    "text_segmentate",
    "to_array",
    "truncate_sequences",
]

# bert4keras made `from bert4keras.snippets import uniout` a no-op on
# Python 3 (the module printed Chinese in Python 2 reprs).
uniout = None


def softmax(x, axis=-1):
    """NumPy softmax (bert4keras's helper for `logits` predictions)."""
    x = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return x / x.sum(axis=axis, keepdims=True)


def is_string(s):
    return isinstance(s, str)


def to_array(*args):
    """NumPy arrays of the arguments; one array for one argument."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(args) == 1 else arrays


def lowercase_and_normalize(text):
    """Lower-case, NFD, drop combining marks: bert4keras's normalisation."""
    return lowercase(text, rules="bert4keras")


def open(name, mode="r", encoding=None, errors="strict", indexable=False):
    """bert4keras's `open` is Python 3's; its `indexable` mode is not kept."""
    if indexable:
        raise unsupported(
            "open(indexable=...)",
            "read the lines into a list, or keep file offsets yourself",
        )
    return builtins.open(name, mode, encoding=encoding, errors=errors)


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split `text` into pieces of at most `maxlen` characters.

    Splits on `seps[0]` first and regroups neighbouring pieces while they
    fit; a group still too long is split on the next separator. Pieces are
    stripped of `strips`. A piece with no separator left may stay longer
    than `maxlen`. Same pieces as bert4keras.
    """
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    pieces = text.split(seps[0])
    texts, current = [], ""
    for i, piece in enumerate(pieces):
        if current and piece and len(current) + len(piece) > maxlen - 1:
            texts.extend(text_segmentate(current, maxlen, seps[1:], strips))
            current = ""
        current += piece if i + 1 == len(pieces) else piece + seps[0]
    if current:
        texts.extend(text_segmentate(current, maxlen, seps[1:], strips))
    return texts


class DataGenerator:
    """bert4keras's batch generator template.

    Subclass it and write `__iter__(self, random=False)` yielding batches,
    typically from `self.sample(random)`. `len(generator)` is the number of
    batches per pass over sized data. `forfit()` repeats passes forever for
    `model.fit(generator.forfit(), steps_per_epoch=len(generator))`.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        self.data = data
        self.batch_size = batch_size
        if hasattr(data, "__len__"):
            self.steps = -(-len(data) // batch_size)
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        return self.steps

    def sample(self, random=False):
        """`(is_end, item)` for each item, shuffled with NumPy when `random`.

        Sized data is permuted; a stream is shuffled through a buffer of
        `buffer_size` items. Uses `np.random` as bert4keras does, so
        `np.random.seed` fixes the order.
        """
        if not random:
            items = iter(self.data)
        elif self.steps is None:
            items = self._buffer_shuffled()
        else:
            items = (
                self.data[i] for i in np.random.permutation(len(self.data))
            )
        current = next(items, _EMPTY)
        if current is _EMPTY:
            raise ValueError("DataGenerator has no data to sample from")
        for following in items:
            yield False, current
            current = following
        yield True, current

    def _buffer_shuffled(self):
        cache, full = [], False
        for item in self.data:
            cache.append(item)
            if full:
                yield cache.pop(np.random.randint(len(cache)))
            elif len(cache) == self.buffer_size:
                full = True
        while cache:
            yield cache.pop(np.random.randint(len(cache)))

    def __iter__(self, random=False):
        raise NotImplementedError(
            f"{type(self).__name__} must define __iter__(self, random=False)"
        )

    def forfit(self, random=True):
        """Batches forever, for `fit(..., steps_per_epoch=len(self))`.

        On TensorFlow this is a `tf.data.Dataset` whose sequence lengths
        may change from batch to batch (Keras would fix the lengths of the
        first two batches of a Python generator); on other backends a
        Python generator. A `None` target (`([x1, x2], None)`) means no
        target, as in Keras 2.
        """
        return _for_keras(self._repeat(random, lambda batch: batch))

    def fortest(self, random=False):
        """Inputs only (each batch's first item), forever, for `predict`."""
        return _for_keras(self._repeat(random, lambda batch: (batch[0],)))

    def _repeat(self, random, pick):
        while True:
            for batch in self.__iter__(random):
                yield pick(batch)

    def to_dataset(self, types, shapes, names=None, padded_batch=False):
        """A `tf.data.Dataset` of samples from `__iter__`, batched.

        As bert4keras: `types` and `shapes` describe one sample; `names`
        wraps samples into dicts keyed by input names; `padded_batch` pads
        each batch to its longest sample. Needs TensorFlow (any backend).
        """
        try:
            import tensorflow as tf
        except ImportError:
            raise unsupported(
                "DataGenerator.to_dataset without TensorFlow",
                "pass generator.forfit() to fit instead",
            ) from None
        samples = self._repeat(True, lambda sample: sample)
        shapes = _as_tuples(shapes)
        if names is not None:
            wrap = _names_wrapper(names)
            samples = (wrap(names, sample) for sample in samples)
            types, shapes = wrap(names, types), wrap(names, shapes)
        signature = _specs(tf, types, shapes)
        dataset = tf.data.Dataset.from_generator(
            lambda: samples, output_signature=signature
        )
        if padded_batch:
            return dataset.padded_batch(self.batch_size, shapes)
        return dataset.batch(self.batch_size)


_EMPTY = object()


def _names_wrapper(names):
    """bert4keras's three ways of naming a sample's parts."""
    if is_string(names):
        return lambda k, v: {k: v}
    if is_string(names[0]):
        return lambda k, v: dict(zip(k, v))
    return lambda k, v: tuple(dict(zip(i, j)) for i, j in zip(k, v))


def _specs(tf, types, shapes):
    """`tf.TensorSpec`s from parallel structures of dtypes and shapes."""
    if is_string(types):
        return tf.TensorSpec(shapes, types)
    if isinstance(types, dict):
        return {k: _specs(tf, types[k], shapes[k]) for k in types}
    return tuple(_specs(tf, t, s) for t, s in zip(types, shapes))


def _as_tuples(structure):
    """Lists inside a structure as tuples (shapes, Keras-friendly batches)."""
    if isinstance(structure, dict):
        return {k: _as_tuples(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        if all(isinstance(x, int) or x is None for x in structure):
            return tuple(structure)  # a shape
        return tuple(_as_tuples(x) for x in structure)
    return structure


def _fit_structure(batch):
    """A batch as Keras 3 reads it: tuples, and no `None` target."""
    if isinstance(batch, (list, tuple)):
        batch = tuple(batch)
        while len(batch) > 1 and batch[-1] is None:
            batch = batch[:-1]
        return tuple(_fit_leaves(part) for part in batch)
    return batch


def _fit_leaves(part):
    """Each input (or target) as an array; several of them as a tuple."""
    if isinstance(part, (list, tuple)):
        return tuple(np.asarray(x) for x in part)
    if isinstance(part, dict):
        return {k: np.asarray(v) for k, v in part.items()}
    return part if part is None else np.asarray(part)


def _for_keras(batches):
    """What to hand Keras 3's `fit`/`predict` for a stream of batches."""
    batches = (_fit_structure(batch) for batch in batches)
    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf

    first = next(batches)
    batches = itertools.chain([first], batches)
    signature = keras.tree.map_structure(
        lambda x: tf.TensorSpec((None,) * np.ndim(x), x.dtype), first
    )
    return tf.data.Dataset.from_generator(
        lambda: batches, output_signature=signature
    )


class AutoRegressiveDecoder(_Decoder):
    """bert4keras 0.11's decoder base (`models.decoding`), plus `set_rtype`."""

    @staticmethod
    def set_rtype(default="probas"):
        """bert4keras < 0.8's decorator for `predict(inputs, output_ids, step)`.

        Same as `wraps(default_rtype=default)`, with the step number (0 on
        the first call of a search) in place of `states`.
        """
        wraps = _Decoder.wraps(default, use_states=True)

        def decorator(predict):
            def with_step(self, inputs, output_ids, states):
                step = 0 if states is None else states
                return predict(self, inputs, output_ids, step), step + 1

            return wraps(with_step)

        return decorator

    def last_token(self, model):
        """A model of the last position's outputs; `predict` stays quiet."""
        if model not in self.models:
            outputs = super().last_token(model).outputs
            self.models[model] = QuietModel(model.inputs, outputs)
        return self.models[model]


class QuietModel(keras.Model):
    """`predict` on arrays runs as one batch and prints nothing.

    Keras 2's `predict` was silent by default; Keras 3's prints a progress
    bar per call, i.e. per decoding step. Other inputs (datasets, options)
    go to Keras's `predict`.
    """

    def predict(self, x, batch_size=None, verbose=0, **kwargs):
        if batch_size is None and not kwargs and _is_arrays(x):
            return self.predict_on_batch(x)
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, **kwargs
        )


def _is_arrays(x):
    parts = x if isinstance(x, (list, tuple)) else [x]
    return all(isinstance(p, np.ndarray) for p in parts)


_UNSUPPORTED = {
    "strQ2B": "use unicodedata.normalize('NFKC', text)",
    "string_matching": "use any(re.search(k, s) for k in keywords)",
    "convert_to_unicode": "Python 3 strings are unicode: use bytes.decode",
    "convert_to_str": "Python 3 strings are unicode: use bytes.decode",
    "parallel_apply": "use multiprocessing.Pool(...).imap",
    "parallel_apply_generator": "use multiprocessing.Pool(...).imap",
    "is_one_of": "use any(x is y for y in ys)",
    "ViterbiDecoder": "CRF decoding is not ported",
    "longest_common_substring": "use difflib.SequenceMatcher",
    "longest_common_subsequence": "use difflib.SequenceMatcher",
    "orthogonally_resize": "resize arrays with NumPy",
    "insert_arguments": "use keyword arguments with defaults",
    "delete_arguments": "use keyword arguments",
    "Progress": "use tqdm",
    "Hook": "not needed on Python 3",
    "is_py2": "Python 3 only",
    "basestring": "use str",
}

__getattr__ = module_getattr(__name__, _UNSUPPORTED)
