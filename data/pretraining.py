"""Pretraining data: documents, packed MLM rows, UniLM pairs, batches.

Every batch has one shape whatever its objective, `((token_ids,
segment_ids), labels)`, int32 `(batch, seq_len)`, and `labels[i]` is the id
that position i must predict, `PAD_ID` where there is nothing to predict:

- MLM: segments all 0 (a UniLM model then attends both ways), labels at
  the selected tokens, not shifted.
- UniLM: `[CLS] source [SEP] target [SEP]`, target in segment 1, and
  `labels[i] = token_ids[i + 1]` wherever position i + 1 is in the target:
  the seq2seq loss written as labels.

One shape and one label rule let a single compiled train step serve both
objectives and any mix of them, and keep JAX from recompiling.
"""

import functools
import math
import pathlib

import keras
import numpy as np

from data.masking import DEFAULT_RATE
from data.masking import jieba_word_starts
from data.masking import mask_tokens
from data.masking import selection_budget
from data.vocab import PAD_ID

OBJECTIVES = ("mlm", "unilm", "mix")

# Independent random streams of `PretrainingBatches`, all keyed by its seed.
_OBJECTIVE_STREAM, _MASK_STREAM, _UNILM_ORDER, _MLM_ORDER = range(4)


def read_documents(paths, limit: int | None = None) -> list[str]:
    """Non-blank lines of the files, one document a line, in file order.

    `limit` keeps the first `limit` documents of all files together (for
    quick runs and tests).
    """
    documents = []
    for path in paths:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        with open(path, encoding="utf-8") as reader:
            documents += [line.strip() for line in reader if line.strip()]
        if limit is not None and len(documents) >= limit:
            return documents[:limit]
    return documents


def encode_documents(texts, tokenizer, whole_word: bool = False):
    """`[(token_ids, word_starts)]` of each text, without [CLS]/[SEP].

    Without `whole_word` every token starts a word (token masking).
    """
    encoded = []
    for text in texts:
        if whole_word:
            ids, starts = jieba_word_starts(text, tokenizer)
        else:
            ids = tokenizer.tokens_to_ids(tokenizer.tokenize(text)[1:-1])
            starts = np.ones(len(ids), dtype=bool)
        if ids:
            encoded.append((np.asarray(ids, np.int32), starts))
    return encoded


def pack_documents(documents, seq_len: int, start_id: int, end_id: int):
    """Fill rows of `seq_len` tokens with consecutive documents.

    Documents are joined with [SEP] into one stream that is cut into rows
    `[CLS] ... ` (RoBERTa's FULL-SENTENCES), so short titles waste no
    padding; only the last row is padded. Returns `(token_ids,
    word_starts)`, both `(rows, seq_len)`. A word cut by a row boundary
    starts anew in the next row, so masking never reaches across rows.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    ids = np.concatenate([np.append(d, end_id) for d, _ in documents])
    starts = np.concatenate([np.append(s, True) for _, s in documents])
    width = seq_len - 1
    rows = math.ceil(len(ids) / width)
    pad = rows * width - len(ids)
    ids = np.pad(ids, (0, pad), constant_values=PAD_ID).reshape(rows, width)
    starts = np.pad(starts, (0, pad), constant_values=True)
    starts = starts.reshape(rows, width)
    starts[:, 0] = True
    token_ids = np.concatenate([np.full((rows, 1), start_id), ids], axis=1)
    word_starts = np.concatenate([np.ones((rows, 1), bool), starts], axis=1)
    return token_ids.astype(np.int32), word_starts


def cut_pairs(
    token_ids, rng: np.random.Generator, source_len: int, target_len: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut one document into `(source, target)` pairs of adjacent spans.

    The document is walked from its start in windows: each target has
    1..`target_len` tokens (uniform) and its source is the up to
    `source_len` tokens just before it, so the model learns to continue a
    text of this domain, as it will continue an abstract with its title.
    Documents shorter than 2 tokens give no pair.
    """
    if source_len < 1 or target_len < 1:
        raise ValueError("source_len and target_len must be positive")
    token_ids = np.asarray(token_ids)
    pairs, position = [], 0
    while len(token_ids) - position >= 2:
        left = len(token_ids) - position
        target = int(rng.integers(1, min(target_len, left - 1) + 1))
        source = min(source_len, left - target)
        split = position + source
        pairs.append(
            (token_ids[position:split], token_ids[split : split + target])
        )
        position = split + target
    return pairs


def mlm_row(token_ids, word_starts, rng, masking):
    """`(token_ids, segment_ids, labels)` of one packed row."""
    input_ids, labels = mask_tokens(
        token_ids, rng, word_starts=word_starts, **masking
    )
    return input_ids, np.zeros_like(input_ids), labels


def unilm_row(source, target, start_id, end_id):
    """`(token_ids, segment_ids, labels)` of one source -> target pair."""
    token_ids = np.concatenate(
        [[start_id], source, [end_id], target, [end_id]]
    ).astype(np.int32)
    segment_ids = np.zeros_like(token_ids)
    segment_ids[len(source) + 2 :] = 1
    labels = np.full_like(token_ids, PAD_ID)
    labels[:-1] = np.where(segment_ids[1:] == 1, token_ids[1:], PAD_ID)
    return token_ids, segment_ids, labels


class PretrainingBatches(keras.utils.PyDataset):
    """`steps` batches; batch `step` depends only on `(seed, step)`.

    That makes resuming exact: a run restarted after step k asks for
    batches k+1, ... and gets what the first run would have seen. The
    objective of each step is drawn once (`unilm_ratio` of them UniLM);
    each objective walks its own pool in epochs reshuffled per epoch.
    MLM masks are drawn per step (dynamic masking, as RoBERTa), UniLM
    pairs are cut once.

    Args:
        rows: `(token_ids, word_starts)` from `pack_documents` (MLM).
        pairs: `(source, target)` arrays from `cut_pairs` (UniLM).
        masking: `mask_tokens` keywords: vocab_size, mask_id,
            special_ids, rate.
    """

    def __init__(
        self,
        rows,
        pairs,
        steps: int,
        batch_size: int,
        seq_len: int,
        masking: dict,
        start_id: int,
        end_id: int,
        unilm_ratio: float = 0.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if unilm_ratio < 1 and (rows is None or not len(rows[0])):
            raise ValueError("the MLM objective needs packed rows")
        if unilm_ratio > 0 and not pairs:
            raise ValueError(
                "the UniLM objective needs pairs (documents "
                "of at least 2 tokens)"
            )
        self.rows, self.pairs, self.steps = rows, pairs, steps
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.masking, self.start_id, self.end_id = masking, start_id, end_id
        draw = np.random.default_rng([seed, _OBJECTIVE_STREAM]).random(steps)
        self.is_unilm = draw < unilm_ratio
        # Index of each step within its own objective's stream.
        self._rank = (
            np.where(
                self.is_unilm,
                np.cumsum(self.is_unilm),
                np.cumsum(~self.is_unilm),
            )
            - 1
        )

    def __len__(self) -> int:
        return self.steps

    @property
    def max_labels(self) -> int:
        """The most labels one row can have, for `max_predictions`.

        MLM: the selection budget of a row of `seq_len - 1` maskable
        tokens; UniLM: the longest target and its [SEP].
        """
        most = 0
        if not self.is_unilm.all():
            rate = self.masking.get("rate", DEFAULT_RATE)
            most = selection_budget(self.seq_len - 1, rate)
        if self.is_unilm.any():
            most = max(most, 1 + max(len(t) for _, t in self.pairs))
        return most

    def objective(self, step: int) -> str:
        return "unilm" if self.is_unilm[step] else "mlm"

    def __getitem__(self, step: int):
        rng = np.random.default_rng([self.seed, _MASK_STREAM, step])
        if self.is_unilm[step]:
            picked = self._pick(len(self.pairs), step, _UNILM_ORDER)
            samples = [
                unilm_row(*self.pairs[i], self.start_id, self.end_id)
                for i in picked
            ]
        else:
            picked = self._pick(len(self.rows[0]), step, _MLM_ORDER)
            samples = [
                mlm_row(self.rows[0][i], self.rows[1][i], rng, self.masking)
                for i in picked
            ]
        token_ids, segment_ids, labels = (
            self._pad([s[k] for s in samples]) for k in range(3)
        )
        return (token_ids, segment_ids), labels

    def _pick(self, pool: int, step: int, stream: int) -> np.ndarray:
        """Indices of this step's samples: epochs of shuffled pools."""
        first = int(self._rank[step]) * self.batch_size
        indices = []
        for position in range(first, first + self.batch_size):
            epoch, index = divmod(position, pool)
            order = _permutation(pool, self.seed, stream, epoch)
            indices.append(order[index])
        return np.array(indices)

    def _pad(self, arrays):
        output = np.zeros((len(arrays), self.seq_len), np.int32)
        for i, array in enumerate(arrays):
            if len(array) > self.seq_len:
                raise ValueError(
                    f"a sample of {len(array)} tokens does "
                    f"not fit seq_len {self.seq_len}"
                )
            output[i, : len(array)] = array
        return output


@functools.lru_cache(maxsize=8)
def _permutation(pool, seed, stream, epoch):
    """The sample order of one epoch (cached: a batch rarely spans two)."""
    return np.random.default_rng([seed, stream, epoch]).permutation(pool)
