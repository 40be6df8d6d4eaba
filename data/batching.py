"""Padding and seq2seq batches for Keras 3 `fit`.

`Seq2SeqBatches` is a `keras.utils.PyDataset`: each item is `(inputs,)`
with `inputs = (token_ids, segment_ids)`, both int32 `(batch, length)`. The
1-tuple tells `fit` there is no `y`: a UniLM model computes its own loss
from the inputs (segment 1 marks the title tokens to predict). `inputs` is
a tuple, not a list: with a list, Keras 3.15 on TensorFlow cannot build
the dataset's output signature.
"""

import math

import keras
import numpy as np

from data.tokenizer import Tokenizer
from data.vocab import PAD_ID

# With `bucket=True`, samples are sorted by length within chunks of this
# many batches: long enough to group similar lengths, short enough that
# batches still mix different parts of the (shuffled) data.
BUCKET_CHUNK_BATCHES = 100


def sequence_padding(
    inputs,
    length: int | list[int] | None = None,
    value=0,
    seq_dims: int = 1,
    mode: str = "post",
) -> np.ndarray:
    """Pad (or cut) the first `seq_dims` axes of each input to `length`.

    As in bert4keras: `length=None` pads to the longest input; longer
    inputs are cut; `mode` 'post' pads at the end, 'pre' at the start.
    """
    if mode not in ("post", "pre"):
        raise ValueError(f'mode must be "post" or "pre", got {mode!r}')
    inputs = [np.asarray(x) for x in inputs]
    if length is None:
        length = np.max([x.shape[:seq_dims] for x in inputs], axis=0)
    elif not hasattr(length, "__getitem__"):
        length = [length]
    slices = tuple(slice(length[i]) for i in range(seq_dims))
    outputs = []
    for x in inputs:
        x = x[slices]
        pad_width = [(0, 0)] * x.ndim
        for i in range(seq_dims):
            missing = length[i] - x.shape[i]
            pad_width[i] = (0, missing) if mode == "post" else (missing, 0)
        outputs.append(np.pad(x, pad_width, constant_values=value))
    return np.array(outputs)


class Seq2SeqBatches(keras.utils.PyDataset):
    """UniLM batches of `(title, content)` pairs: content -> title.

    Each pair becomes `tokenizer.encode(content, title, maxlen=maxlen)`:
    `[CLS] content [SEP]` in segment 0, `title [SEP]` in segment 1. A pair
    over `maxlen` is cut from its longer side, never dropped, so the
    number of samples always equals the number of pairs.

    Batches are padded to their longest sample, or to `fixed_length`
    (at least `maxlen`) where a backend must see one shape, e.g. JAX
    without recompiling. `bucket` groups similar lengths to waste less
    padding. The order of epoch `e` depends only on `(seed, e)`; Keras
    calls `on_epoch_end` after every epoch (and once before the first, so
    `fit` starts at `e = 1`); `set_epoch` sets `e` directly.

    Args:
        pairs: `(title, content)` tuples, e.g. from `read_pairs`.
        tokenizer: a `Tokenizer` (anything with its `encode`).
        maxlen: most tokens of a sample, both segments together.
        batch_size: samples per batch; the last batch may be smaller.
        shuffle: new order every epoch (training) or file order (eval).
        seed: seed of the shuffling.
        bucket: sort by length within chunks of `BUCKET_CHUNK_BATCHES`
            batches, then shuffle the batch order.
        fixed_length: pad every batch to this length.
        length_multiple: pad every batch to a multiple of this (at most
            `maxlen`), so a compiled train step sees a few shapes only.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size`.
    """

    def __init__(
        self,
        pairs: list[tuple[str, str]],
        tokenizer: Tokenizer,
        maxlen: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        bucket: bool = False,
        fixed_length: int | None = None,
        length_multiple: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not pairs:
            raise ValueError("Seq2SeqBatches needs at least one pair")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if fixed_length is not None and fixed_length < maxlen:
            raise ValueError(
                f"fixed_length ({fixed_length}) must be at least "
                f"maxlen ({maxlen}), or samples would be cut twice"
            )
        # Encoding once up front gives the lengths bucketing sorts by.
        self.samples = [
            self.encode_pair(tokenizer, title, content, maxlen)
            for title, content in pairs
        ]
        # The most target tokens of a sample (title and final [SEP]): how
        # many positions per row a trainer's gathered head must score.
        self.max_targets = max(self.count_targets(s) for s in self.samples)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket, self.fixed_length = bucket, fixed_length
        self.maxlen, self.length_multiple = maxlen, length_multiple
        self.set_epoch(0)

    def __len__(self) -> int:
        return math.ceil(len(self.samples) / self.batch_size)

    def __getitem__(self, index: int):
        batch = [self.samples[i] for i in self._batches[index]]
        length = self.fixed_length or self._rounded_length(batch)
        return (self.collate(batch, length),)

    @staticmethod
    def encode_pair(tokenizer, title: str, content: str, maxlen: int):
        """One sample: `(token_ids, segment_ids)` of the pair."""
        return tokenizer.encode(content, title, maxlen=maxlen)

    @staticmethod
    def count_targets(sample) -> int:
        return int(sum(sample[1]))

    @staticmethod
    def collate(batch, length):
        """The batch's inputs, its first axis padded to `length`."""
        token_ids = sequence_padding([s[0] for s in batch], length, PAD_ID)
        segment_ids = sequence_padding([s[1] for s in batch], length)
        return (token_ids.astype("int32"), segment_ids.astype("int32"))

    def _rounded_length(self, batch) -> int | None:
        if not self.length_multiple:
            return None
        longest = max(len(sample[0]) for sample in batch)
        multiple = self.length_multiple
        return max(
            longest, min(-(-longest // multiple) * multiple, self.maxlen)
        )

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        """Fix the batch order of `epoch` (e.g. when resuming training)."""
        self.epoch = epoch
        self._batches = self._plan(np.random.default_rng([self.seed, epoch]))

    def _plan(self, rng: np.random.Generator) -> list[list[int]]:
        """Sample indices of every batch, in the order they are served."""
        order = list(range(len(self.samples)))
        if self.shuffle:
            order = rng.permutation(len(order)).tolist()
        if self.bucket:
            order = self._sort_in_chunks(order)
        size = self.batch_size
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        if self.bucket and self.shuffle:
            # Sorted chunks would serve short batches first; mix them.
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _sort_in_chunks(self, order: list[int]) -> list[int]:
        chunk = self.batch_size * BUCKET_CHUNK_BATCHES
        sorted_order = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            sorted_order.extend(sorted(part, key=self._length))
        return sorted_order

    def _length(self, index: int) -> int:
        return len(self.samples[index][0])


class EncoderDecoderBatches(Seq2SeqBatches):
    """`(source_ids, target_ids)` batches of `(title, content)` pairs for
    an encoder-decoder (T5 v1.1 / mT5), as bert4keras's mT5 example makes
    them: the source is `tokenizer.encode(content, maxlen=maxlen)` (an
    `SpTokenizer` with `token_end="</s>"` ends it with `</s>`), the target
    `[start_id] + tokenizer.encode(title, maxlen=target_maxlen)`: the
    decoder reads it shifted right behind its start token (0, the pad id).
    Both are padded with 0; `fixed_length` and `length_multiple` apply to
    the sources, targets pad to the batch's longest. Ordering, bucketing
    (by source length) and the other arguments are `Seq2SeqBatches`'s;
    `max_targets` counts title tokens plus the end token.
    """

    def __init__(
        self,
        pairs: list[tuple[str, str]],
        tokenizer,
        maxlen: int,
        target_maxlen: int,
        batch_size: int,
        start_id: int = PAD_ID,
        **kwargs,
    ):
        if target_maxlen < 2:
            raise ValueError(
                f"target_maxlen must be at least 2 (a token and the end "
                f"token), got {target_maxlen}"
            )
        self.target_maxlen, self.start_id = target_maxlen, start_id
        super().__init__(pairs, tokenizer, maxlen, batch_size, **kwargs)

    def encode_pair(self, tokenizer, title, content, maxlen):
        source = tokenizer.encode(content, maxlen=maxlen)[0]
        target = tokenizer.encode(title, maxlen=self.target_maxlen)[0]
        return source, [self.start_id, *target]

    @staticmethod
    def count_targets(sample) -> int:
        return len(sample[1]) - 1

    @staticmethod
    def collate(batch, length):
        source_ids = sequence_padding([s[0] for s in batch], length, PAD_ID)
        target_ids = sequence_padding([s[1] for s in batch], None, PAD_ID)
        return (source_ids.astype("int32"), target_ids.astype("int32"))
