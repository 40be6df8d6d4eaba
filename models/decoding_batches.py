"""How `Seq2SeqDecoder` groups sources into compiled batches.

Plain Python and NumPy around the decoder's loop:

- `sources_per_batch`: how many sources one batch takes, from the free
  device memory (`decoding_bytes` per source);
- `check_sources`: errors that name the source, before anything compiles;
- `decode_by_length`: length-sorted batches, results in input order;
- `pack`: a batch as one token-id array of a bucketed length, filled up
  with copies so that every batch of a bucket has the same shape.
"""

import numbers

import numpy as np

from data.vocab import PAD_ID

# Sources per compiled batch where device memory is unknown (a CPU), and the
# most anywhere: beyond that a step's host work dominates.
DEFAULT_BATCH_SIZE = 32
MAX_BATCH_SIZE = 1024
# Share of the free device memory that decoding's batch may take.
MEMORY_SHARE = 0.5


def decoding_bytes(config, rows_per_source, source_len, slots, dtype_bytes):
    """Device bytes one source needs while it is decoded, an upper bound:
    its key/value cache (source once, outputs per row, times 3 for the
    reordered and updated copies a step makes), one layer's activations
    of the encoding pass (float32 scores included) and float32 logits per
    row (the head's softmax and its log)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    source = layers * 2 * hidden * source_len * dtype_bytes
    outputs = 3 * rows_per_source * layers * 2 * hidden * slots * dtype_bytes
    scores = 4 * config.num_attention_heads * source_len * source_len * 2
    activations = source_len * (config.intermediate_size + 6 * hidden)
    logits = 3 * rows_per_source * config.vocab_size * 4
    return source + outputs + scores + activations * dtype_bytes + logits


def sources_per_batch(
    config, rows_per_source, source_len, slots, dtype_bytes, free_bytes
):
    """Sources decoded at once: a power of two whose `decoding_bytes` fit
    in `MEMORY_SHARE` of `free_bytes`, at most `MAX_BATCH_SIZE`;
    `DEFAULT_BATCH_SIZE` where the free memory is unknown (None)."""
    if free_bytes is None:
        return DEFAULT_BATCH_SIZE
    need = decoding_bytes(
        config, rows_per_source, source_len, slots, dtype_bytes
    )
    fits = max(1, int(MEMORY_SHARE * free_bytes // need))
    return min(MAX_BATCH_SIZE, 1 << (fits.bit_length() - 1))


def check_sources(sources, count, what, maxlen, max_positions):
    """Sources a batch can take (each with room for `maxlen` outputs
    within `max_positions`), and a positive beam or sample `count` (named
    `what`): errors that name the source, before anything is compiled."""
    if isinstance(sources, (str, bytes)) or not hasattr(sources, "__len__"):
        raise TypeError(
            f"sources must be a list of token id lists, got "
            f"{type(sources).__name__}"
        )
    if not (isinstance(count, numbers.Integral) and count >= 1):
        raise ValueError(f"{what} must be 1 or more, got {count!r}")
    for number, ids in enumerate(sources):
        if len(ids) == 0:
            raise ValueError(f"source {number} is empty")
        if len(ids) + maxlen > max_positions:
            raise ValueError(
                f"source {number} has {len(ids)} tokens; with maxlen "
                f"{maxlen} it exceeds max_position_embeddings "
                f"{max_positions}. Truncate it, e.g. "
                f"tokenizer.encode(text, maxlen={max_positions - maxlen})"
            )


def with_progress(items, enabled, unit="source"):
    """A tqdm bar over `items` when enabled (sources or batches)."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="decoding", unit=unit)


def decode_by_length(sources, decode, progress, size):
    """`decode(batch, size)` over length-sorted batches of `size` sources;
    the results in input order."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    starts = range(0, len(order), size)
    results = [None] * len(sources)
    for start in with_progress(starts, progress, unit="batch"):
        chosen = order[start : start + size]
        batch = [sources[i] for i in chosen]
        for i, result in zip(chosen, decode(batch, size)):
            results[i] = result
    return results


def pack(batch, size, bucket, max_positions):
    """Token ids (size, length) and lengths: the length a multiple of
    `bucket` (at most `max_positions`), the rows past the batch copies of
    its first source, so that every batch has the same shape."""
    batch = list(batch) + [batch[0]] * (size - len(batch))
    lengths = np.array([len(ids) for ids in batch], dtype="int32")
    length = -(-int(lengths.max()) // bucket) * bucket
    length = min(length, max_positions)
    token_ids = np.full((len(batch), length), PAD_ID, dtype="int32")
    for row, ids in enumerate(batch):
        token_ids[row, : len(ids)] = ids
    return token_ids, lengths
