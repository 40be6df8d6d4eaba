"""A small title-generation data set the toolkit makes itself.

The default run of every task must work on a fresh machine with nothing
downloaded, so it needs pairs and a vocabulary of its own. The rule is one a
tiny model learns within a minute on a CPU yet is a real seq2seq problem:
the content is a run of "sentences" of random Chinese characters, and the
title is its first sentence (the "lead" baseline of news summarisation): the
model must learn to copy, and where to stop. Two or three sentences keep
most samples within 32 tokens (batches are padded to multiples of 32),
which keeps training steps cheap.
"""

import numpy as np

from data.vocab import SPECIAL_TOKENS

# 60 common characters: enough variety for a non-trivial task, few enough
# that a tiny model's embedding table stays small.
CHARACTERS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成"
    "会可主发年动同工也能下过子说产种面而方后"
)


def make_pairs(count, seed=0, sentences=(2, 3), sentence_length=(3, 8)):
    """`count` (title, content) pairs, deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        parts = [
            "".join(
                rng.choice(
                    list(CHARACTERS),
                    rng.integers(*sentence_length, endpoint=True),
                )
            )
            for _ in range(rng.integers(*sentences, endpoint=True))
        ]
        title = parts[0]
        pairs.append((title, "，".join(parts) + "。"))
    return pairs


def write_vocab(path):
    """Write the vocabulary of the synthetic data (specials + characters)."""
    tokens = list(SPECIAL_TOKENS) + ["，", "。"] + list(CHARACTERS)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(dict.fromkeys(tokens)) + "\n")
    return path
