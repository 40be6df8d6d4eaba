"""BERT's masked-language-model corruption, with whole-word masking.

Plain NumPy, one sequence at a time, so the rules can be tested exactly:

- `mask_tokens` selects about `rate` of the maskable tokens and corrupts
  them 80/10/10 ([MASK] / a random token / unchanged), as Google's
  `create_pretraining_data.py` does. Selection goes word by word when
  `word_starts` is given, so all WordPiece tokens of a word are masked
  together (Chinese BERT-wwm), while the count of selected *tokens* still
  aims at `rate`.
- `jieba_word_starts` tokenizes a text exactly as fine-tuning will (the
  whole text at once) and marks the tokens that begin a jieba word.

`PAD_ID` (0) is padding everywhere in this toolkit
(`models.layers.visible_keys` hides it), so it is never selected, and
`labels` hold it for "no target".
"""

from collections.abc import Callable
from collections.abc import Iterable

import numpy as np

from data.vocab import PAD_ID

# The share of selected tokens that become [MASK] and a random token; the
# rest stay unchanged (BERT: the model cannot trust that an unmasked token
# is right, so it must represent every token well).
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1
# BERT's share of selected tokens.
DEFAULT_RATE = 0.15


def mask_tokens(
    token_ids: np.ndarray,
    rng: np.random.Generator,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
    rate: float = DEFAULT_RATE,
    word_starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt one sequence for MLM; returns `(input_ids, labels)`.

    `labels[i]` is the original id where token i was selected and
    `PAD_ID` elsewhere; the loss is taken exactly where `labels != PAD_ID`.
    `word_starts[i]` is True where a new word begins (special tokens count
    as their own words); None masks token by token.
    """
    token_ids = np.asarray(token_ids)
    special = np.isin(token_ids, [PAD_ID, *special_ids])
    selected = select_tokens(special, rng, rate, word_starts)
    input_ids = corrupt(
        token_ids, selected, rng, vocab_size, mask_id, special_ids
    )
    return input_ids, np.where(selected, token_ids, PAD_ID)


def select_tokens(
    special: np.ndarray,
    rng: np.random.Generator,
    rate: float,
    word_starts: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the selected tokens, whole words at a time.

    As Google's `create_masked_lm_predictions`: the budget is
    `round(rate * maskable tokens)` (at least 1); words are visited in a
    random order and taken while they fit the budget, so a long word is
    skipped rather than overshooting.
    """
    words = _word_groups(special, word_starts)
    budget = selection_budget(int((~special).sum()), rate) if words else 0
    selected = np.zeros(special.shape, dtype=bool)
    count = 0
    for index in rng.permutation(len(words)):
        start, end = words[index]
        if count + end - start > budget:
            continue
        selected[start:end] = True
        count += end - start
        if count == budget:
            break
    return selected


def selection_budget(maskable: int, rate: float) -> int:
    """Tokens to select among `maskable` ones: `round(rate * n)`, >= 1."""
    return max(1, round(rate * maskable))


def _word_groups(special, word_starts):
    """(start, end) of every word made only of maskable tokens."""
    if word_starts is None:
        starts = np.ones(special.shape, bool)
    else:
        starts = np.asarray(word_starts, bool).copy()
    # A special token is a word of its own, so it also ends the one before.
    starts |= special
    starts[1:] |= special[:-1]
    starts[:1] = True
    boundaries = np.flatnonzero(starts)
    ends = np.append(boundaries[1:], len(special))
    return [
        (int(s), int(e)) for s, e in zip(boundaries, ends) if not special[s]
    ]


def corrupt(
    token_ids: np.ndarray,
    selected: np.ndarray,
    rng: np.random.Generator,
    vocab_size: int,
    mask_id: int,
    special_ids: Iterable[int],
) -> np.ndarray:
    """Apply 80/10/10 to the selected tokens (each token draws its own)."""
    draw = rng.random(token_ids.shape)
    to_mask = selected & (draw < MASK_SHARE)
    to_random = (
        selected & (draw >= MASK_SHARE) & (draw < MASK_SHARE + RANDOM_SHARE)
    )
    output = token_ids.copy()
    output[to_mask] = mask_id
    output[to_random] = random_tokens(
        int(to_random.sum()), rng, vocab_size, [PAD_ID, mask_id, *special_ids]
    )
    return output


def random_tokens(count, rng, vocab_size, excluded):
    """`count` ids drawn uniformly from the vocabulary minus `excluded`.

    A random [CLS] or [SEP] would teach the model that segment markers can
    appear anywhere; drawing again is cheap as they are a handful of ids.
    """
    ids = rng.integers(0, vocab_size, count)
    bad = np.isin(ids, list(excluded))
    while bad.any():
        ids[bad] = rng.integers(0, vocab_size, int(bad.sum()))
        bad = np.isin(ids, list(excluded))
    return ids


def jieba_word_starts(
    text: str,
    tokenizer,
    cut: Callable[[str], list[str]] | None = None,
) -> tuple[list[int], np.ndarray]:
    """Token ids of `text` (no [CLS]/[SEP]) and where jieba words begin.

    The text is tokenized whole, as fine-tuning sees it, and
    `tokenizer.rematch` maps each token back to its characters; a token
    starts a word when its first character opens a different jieba word
    from the previous token's. A token without characters ([UNK]) stands
    alone. `cut` defaults to `jieba.lcut`.
    """
    if cut is None:
        import jieba

        jieba.setLogLevel(60)  # the "Building prefix dict" chatter
        cut = jieba.lcut
    tokens = tokenizer.tokenize(text)[1:-1]
    char_word = _char_word_index(text, cut(text))
    # A token without characters gets a word id no other token has.
    words = np.array(
        [
            char_word[chars[0]] if chars else -1 - i
            for i, chars in enumerate(tokenizer.rematch(text, tokens))
        ],
        int,
    )
    starts = np.ones(len(words), dtype=bool)
    starts[1:] = words[1:] != words[:-1]
    return tokenizer.tokens_to_ids(tokens), starts


def _char_word_index(text, words):
    """For each character of `text`, the index of the word covering it."""
    if sum(map(len, words)) != len(text):
        raise ValueError(
            "the word segmentation does not cover the text "
            "exactly (characters lost or added)"
        )
    return np.repeat(np.arange(len(words)), [len(w) for w in words])
