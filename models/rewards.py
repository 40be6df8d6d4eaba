"""Sentence rewards on token ids, inside the compiled train step.

The sequence-level strategies (`scst`, `mrt`, `oracle` at the sentence
level) score titles the model decoded against the reference while they
train. They do it here, in `keras.ops` on token ids, so that the step
stays one compiled function on every backend, with no host round trip.

Both rewards repeat the arithmetic of the toolkit's scorer
(`tasks/lib/metrics.py`, which reads titles as characters):

- `rouge_l`: the `rouge` package's ROUGE-L F (summary level, one
  sentence): distinct tokens of the reference (m) and of the hypothesis
  (n), the distinct tokens of the longest common subsequence that the
  package reconstructs (ties broken as it breaks them), and
  F = 2·P·R / (P + R + 1e-8) with P = lcs/n, R = lcs/m;
- `bleu`: nltk's `sentence_bleu` with `SmoothingFunction().method1`:
  clipped n-gram precisions up to 4-grams (0.1 added to a zero count),
  their geometric mean times the brevity penalty; 0 without a unigram
  match.

A title is scored on its tokens, so the reward equals the toolkit's score
when each token of the title decodes to one character, which holds for
Chinese characters and punctuation (one token each in BERT's Chinese
vocabulary). A token of several characters (digits, Latin words, '##'
pieces) counts as one unit here and as several there, and a '.' token
does not split sentences here. A test compares the two on titles of
one-character tokens.

Titles are `(tokens, mask)` pairs: int32 ids `(batch, length)` and a mask
that is true on a prefix of each row (the title, its end token excluded).
"""

from keras import ops

# Smoothing of nltk's method1: added to a zero n-gram count.
BLEU_EPSILON = 0.1
BLEU_ORDER = 4
REWARDS = ("rouge-l", "bleu")


def score(name: str, hypothesis, hypothesis_mask, reference, reference_mask):
    """(batch,) float32 reward `name` (one of `REWARDS`) of each row."""
    if name == "rouge-l":
        return rouge_l(hypothesis, hypothesis_mask, reference, reference_mask)
    if name == "bleu":
        return bleu(hypothesis, hypothesis_mask, reference, reference_mask)
    raise ValueError(f"reward must be one of {REWARDS}, got {name!r}")


def _masked(tokens, mask, outside):
    """Token ids with `outside` (a negative id) where `mask` is false:
    positions outside two titles never match each other."""
    return ops.where(mask, ops.cast(tokens, "int32"), outside)


def distinct_count(tokens, mask):
    """(batch,) float32: how many distinct tokens each row's title holds."""
    return ops.sum(ops.cast(first_occurrences(tokens, mask), "float32"), -1)


def first_occurrences(tokens, mask):
    """(batch, length) bool: a title position whose token no earlier
    position of the title holds."""
    length = ops.shape(tokens)[1]
    same = ops.equal(tokens[:, :, None], tokens[:, None, :])
    earlier = ops.arange(length)[None, :] < ops.arange(length)[:, None]
    seen = same & earlier[None] & mask[:, None, :]
    return mask & ops.logical_not(ops.any(seen, axis=-1))


def lcs_table(reference, hypothesis):
    """(batch, m + 1, n + 1) int32: table[i][j] = length of the LCS of the
    first i reference and first j hypothesis tokens.

    Row i from row i - 1 in one vectorised step: with
    c[j] = max(table[i-1][j], table[i-1][j-1] + 1 where the tokens match),
    table[i] is the running maximum of c over j, which is the usual
    recurrence (a match is never worse than skipping a token).
    """
    n = ops.shape(hypothesis)[1]
    up_to = ops.arange(n + 1)[None, :] <= ops.arange(n + 1)[:, None]
    row = ops.zeros_like(ops.pad(hypothesis, ((0, 0), (1, 0))))
    rows = [row]
    for i in range(ops.shape(reference)[1]):
        match = ops.equal(reference[:, i : i + 1], hypothesis)
        diagonal = ops.where(match, row[:, :-1] + 1, 0)
        candidates = ops.maximum(row[:, 1:], diagonal)
        candidates = ops.pad(candidates, ((0, 0), (1, 0)))
        # Running maximum along j: values are >= 0, so 0 is neutral.
        spread = ops.where(up_to[None], candidates[:, None, :], 0)
        row = ops.max(spread, axis=-1)
        rows.append(row)
    return ops.stack(rows, axis=1)


def lcs_positions(reference, hypothesis, reference_length, hypothesis_length):
    """(batch, m) bool: the reference positions of the LCS that the `rouge`
    package reconstructs, walking back from the end of both titles: on a
    match take it, else go up (one reference token back) only when that
    keeps a strictly longer LCS, else left."""
    table = lcs_table(reference, hypothesis)
    batch, m = ops.shape(reference)[0], ops.shape(reference)[1]
    width = ops.shape(hypothesis)[1] + 1
    flat = ops.reshape(table, (batch, -1))
    i, j = reference_length, hypothesis_length
    taken = ops.zeros((batch, m), "bool")

    def at(rows, cols):
        index = ops.maximum(rows * width + cols, 0)[:, None]
        return ops.take_along_axis(flat, index, axis=1)[:, 0]

    def token(tokens, place):
        index = ops.maximum(place - 1, 0)[:, None]
        return ops.take_along_axis(tokens, index, axis=1)[:, 0]

    for _ in range(m + ops.shape(hypothesis)[1]):
        inside = (i > 0) & (j > 0)
        match = inside & ops.equal(token(reference, i), token(hypothesis, j))
        up = inside & ~match & (at(i - 1, j) > at(i, j - 1))
        left = inside & ~match & ~up
        slot = ops.one_hot(ops.maximum(i - 1, 0), m, dtype="bool")
        taken = taken | (slot & match[:, None])
        i = i - ops.cast(match | up, "int32")
        j = j - ops.cast(match | left, "int32")
    return taken


def rouge_l(hypothesis, hypothesis_mask, reference, reference_mask):
    """(batch,) float32: the `rouge` package's ROUGE-L F of each row (see
    the module docstring); 0 for an empty hypothesis or reference."""
    hyp = _masked(hypothesis, hypothesis_mask, -1)
    ref = _masked(reference, reference_mask, -2)
    hyp_length = ops.sum(ops.cast(hypothesis_mask, "int32"), axis=-1)
    ref_length = ops.sum(ops.cast(reference_mask, "int32"), axis=-1)
    taken = lcs_positions(ref, hyp, ref_length, hyp_length)
    common = distinct_count(ref, taken)
    m = distinct_count(ref, reference_mask)
    n = distinct_count(hyp, hypothesis_mask)
    recall = common / ops.maximum(m, 1.0)
    precision = common / ops.maximum(n, 1.0)
    f = 2.0 * precision * recall / (precision + recall + 1e-8)
    return ops.where((m > 0) & (n > 0), f, 0.0)


def _shifted(tokens, offset, outside):
    """`tokens[:, p + offset]` at p, `outside` past the end."""
    if offset == 0:
        return tokens
    return ops.pad(
        tokens[:, offset:], ((0, 0), (0, offset)), constant_values=outside
    )


def ngram_matches(hyp, ref, order):
    """(same n-gram within hyp, hyp n-gram equals ref n-gram), each
    (batch, length, length) bool, for n-grams starting at each position."""
    same = ops.ones_like(hyp[:, :, None] == hyp[:, None, :])
    shared = ops.ones_like(hyp[:, :, None] == ref[:, None, :])
    for offset in range(order):
        h, r = _shifted(hyp, offset, -1), _shifted(ref, offset, -2)
        same = same & ops.equal(h[:, :, None], h[:, None, :])
        shared = shared & ops.equal(h[:, :, None], r[:, None, :])
    return same, shared


def clipped_counts(hyp, hyp_length, ref, ref_length, order):
    """(clipped matches, hypothesis n-grams) of one order, each (batch,):
    nltk's `modified_precision` numerator and denominator, the latter
    before nltk's max(1, ·)."""
    places = ops.arange(ops.shape(hyp)[1])[None, :]
    hyp_starts = places + order <= hyp_length[:, None]
    ref_starts = places + order <= ref_length[:, None]
    same, shared = ngram_matches(hyp, ref, order)
    in_hyp = ops.sum(ops.cast(same & hyp_starts[:, None, :], "float32"), -1)
    in_ref = ops.sum(ops.cast(shared & ref_starts[:, None, :], "float32"), -1)
    # Each distinct n-gram once, at its first occurrence.
    earlier = places < ops.transpose(places)
    repeated = ops.any(same & earlier[None] & hyp_starts[:, None, :], -1)
    first = ops.cast(hyp_starts & ~repeated, "float32")
    clipped = ops.sum(first * ops.minimum(in_hyp, in_ref), axis=-1)
    return clipped, ops.sum(ops.cast(hyp_starts, "float32"), axis=-1)


def bleu(hypothesis, hypothesis_mask, reference, reference_mask):
    """(batch,) float32: nltk `sentence_bleu` (4-grams, equal weights,
    smoothing method1) of each row; 0 for an empty hypothesis."""
    hyp = _masked(hypothesis, hypothesis_mask, -1)
    ref = _masked(reference, reference_mask, -2)
    # Both titles padded to one length, so n-grams compare position-wise.
    width = max(ops.shape(hyp)[1], ops.shape(ref)[1])
    hyp = ops.pad(
        hyp, ((0, 0), (0, width - ops.shape(hyp)[1])), constant_values=-1
    )
    ref = ops.pad(
        ref, ((0, 0), (0, width - ops.shape(ref)[1])), constant_values=-2
    )
    hyp_length = ops.sum(ops.cast(hypothesis_mask, "int32"), axis=-1)
    ref_length = ops.sum(ops.cast(reference_mask, "int32"), axis=-1)
    log_precision, unigrams = 0.0, None
    for order in range(1, BLEU_ORDER + 1):
        clipped, total = clipped_counts(hyp, hyp_length, ref, ref_length, order)
        if unigrams is None:
            unigrams = clipped
        numerator = ops.where(clipped > 0, clipped, BLEU_EPSILON)
        precision = numerator / ops.maximum(total, 1.0)
        log_precision = log_precision + ops.log(precision) / BLEU_ORDER
    c = ops.cast(hyp_length, "float32")
    r = ops.cast(ref_length, "float32")
    brevity = ops.where(c > r, 1.0, ops.exp(1.0 - r / ops.maximum(c, 1.0)))
    return ops.where(unigrams > 0, brevity * ops.exp(log_precision), 0.0)
