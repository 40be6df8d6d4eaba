"""Decoding: bert4keras's rule on toy predictors, fast path = reference.

The UniLM tests share one tiny model whose weights come from a NumPy seed,
so TensorFlow and JAX decode the same model; the `[SEP]` bias makes titles
end at every length from 1 to maxlen, so beams end early, leave the beam,
and run to maxlen.
"""

import itertools
import math

import numpy as np
import pytest

from models.bert import build_transformer_model
from models.config import BertConfig
from models.decoding import AutoRegressiveDecoder
from models.decoding import Seq2SeqDecoder
from models.decoding_batches import DEFAULT_BATCH_SIZE
from models.decoding_batches import MAX_BATCH_SIZE
from models.decoding_batches import MEMORY_SHARE
from models.decoding_batches import decoding_bytes
from models.decoding_batches import sources_per_batch
from models.search import Repetition
from models.search import length_normalised
from tests.common import TINY_DECODER

VOCAB, CLS, END = TINY_DECODER["vocab_size"], 2, 3
MAXLEN = 8
SOURCE_LENGTHS = (1, 3, 5, 8, 11, 14, 18, 22, 26, 30, 35, 40)


# Toy predictors (the base class alone) ------------------------------------


class TablePredictor(AutoRegressiveDecoder):
    """`predict` from a function of the prefix: fixed conditionals."""

    def __init__(self, conditional, end_id, maxlen, minlen=1):
        super().__init__(None, end_id, maxlen, minlen)
        self.conditional = conditional

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        return np.array([self.conditional(tuple(ids)) for ids in output_ids])


def article_conditional(prefix):
    """The exposure-bias article's example; tokens a b c d = 0 1 2 3, end 4."""
    table = {
        (): [0.6, 0, 0.4, 0, 0],
        (0,): [0, 0.55, 0, 0.45, 0],
        (2,): [0, 0.1, 0, 0.9, 0],
    }
    return np.array(table.get(prefix, [0, 0, 0, 0, 1.0]))


def test_article_example_beam_1_and_2():
    decoder = TablePredictor(article_conditional, end_id=4, maxlen=3)
    assert list(decoder.beam_search([], topk=1)) == [0, 1, 4]  # a b
    assert list(decoder.beam_search([], topk=2)) == [2, 3, 4]  # c d
    assert list(decoder.greedy_search([])) == [0, 1, 4]


def test_ended_beam_leaves_when_not_best():
    """bert4keras drops an ended beam that is not the best, even if it
    would have beaten every longer title: here [end] (0.4) loses to
    [a, a] (0.33), because at step 1 the best beam, [a], had not ended."""

    def conditional(prefix):
        return {(): [0.6, 0.4], (0,): [0.55, 0.45]}.get(prefix, [0.5, 0.5])

    decoder = TablePredictor(conditional, end_id=1, maxlen=2)
    assert list(decoder.beam_search([], topk=2)) == [0, 0]


def random_conditional(vocab, seed):
    """Fixed random distributions, one per prefix (no ties, none is 1)."""

    def conditional(prefix):
        rng = np.random.default_rng([seed, len(prefix), *prefix])
        return rng.dirichlet(np.ones(vocab))

    return conditional


def exhaustive(conditional, vocab, end_id, maxlen):
    """What an unbounded beam returns under bert4keras's rule.

    Length by length: the candidates are every sequence whose earlier
    tokens hold no end; if the best one ends there, it is the answer; at
    maxlen the best candidate is.
    """
    for length in range(1, maxlen + 1):
        candidates = [
            ids
            for ids in itertools.product(range(vocab), repeat=length)
            if end_id not in ids[:-1]
        ]
        scores = [score(conditional, ids) for ids in candidates]
        best = candidates[int(np.argmax(scores))]
        if best[-1] == end_id or length == maxlen:
            return list(best)


def score(conditional, ids):
    return sum(
        float(np.log(conditional(ids[:i])[token] + 1e-12))
        for i, token in enumerate(ids)
    )


@pytest.mark.parametrize("seed", range(8))
def test_wide_beam_equals_exhaustive_search(seed):
    vocab, end_id, maxlen = 3, 2, 4
    conditional = random_conditional(vocab, seed)
    decoder = TablePredictor(conditional, end_id, maxlen)
    found = decoder.beam_search([], topk=vocab**maxlen)
    assert list(found) == exhaustive(conditional, vocab, end_id, maxlen)


def test_minlen_keeps_ended_beams_until_then():
    """Before minlen an end is just a token; after it, as in bert4keras, a
    beam has ended only when its last token is the end."""

    def conditional(prefix):
        return [0.3, 0.7] if not prefix else [0.6, 0.4]

    decoder = TablePredictor(conditional, end_id=1, maxlen=5, minlen=2)
    # At minlen [end, 0] (0.42) is the best beam but does not end with the
    # end token, so it grows on; [end, end] (0.28) leaves as complete.
    state = decoder.run_beam_search([], topk=2)
    assert list(state.result) == [1, 0, 0, 0, 0]
    assert [ids for ids, _ in state.nbest()[1:]] == [[1, 1]]


def test_beam_state_nbest_starts_with_the_answer():
    decoder = TablePredictor(article_conditional, end_id=4, maxlen=3)
    state = decoder.run_beam_search([], topk=2)
    nbest = state.nbest()
    assert nbest[0][0] == [2, 3, 4]
    assert nbest[0][1] == pytest.approx(math.log(0.4 * 0.9), abs=1e-9)
    assert [ids for ids, _ in nbest[1:]] == [[0, 1, 4]]


# Sampling with toy predictors ----------------------------------------------

FIXED = np.array([0.5, 0.2, 0.15, 0.1, 0.05])


def fixed_conditional(prefix):
    return FIXED


@pytest.mark.parametrize(
    "topk, topp, allowed",
    [
        (2, None, {0, 1}),
        (None, 0.6, {0, 1}),
        (None, 0.5, {0}),
        (3, 0.8, {0, 1}),
        (None, None, {0, 1, 2, 3, 4}),
    ],
)
def test_random_sample_stays_in_allowed_set(topk, topp, allowed):
    decoder = TablePredictor(fixed_conditional, end_id=4, maxlen=6)
    np.random.seed(0)
    samples = decoder.random_sample([], 20, topk=topk, topp=topp)
    assert len(samples) == 20
    emitted = {int(i) for ids in samples for i in ids}
    assert emitted <= allowed
    assert len(emitted) == len(allowed)


def test_random_sample_reproducible_with_seed():
    decoder = TablePredictor(fixed_conditional, end_id=4, maxlen=6)
    runs = []
    for seed in (3, 3, 4):
        np.random.seed(seed)
        runs.append([list(ids) for ids in decoder.random_sample([], 5)])
    assert runs[0] == runs[1] != runs[2]


# UniLM: fast path against full recompute ----------------------------------


def tiny_unilm():
    """Weights from a NumPy seed (same model on every backend); `[SEP]`'s
    MLM bias makes titles end at lengths 1 to MAXLEN."""
    model = build_transformer_model(None, application="unilm", **TINY_DECODER)
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            np.ones(w.shape)
            if w.path.endswith("gamma")
            else rng.normal(0, 0.2, w.shape)
            for w in model.weights
        ]
    )
    bias = np.zeros(VOCAB)
    bias[END], bias[0] = 0.5, -30.0
    model.bert_network["MLM-Bias"].bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_unilm()


@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(1)
    return [
        [CLS, *rng.integers(4, VOCAB, size=n).tolist(), END]
        for n in SOURCE_LENGTHS
    ]


@pytest.fixture(scope="module")
def fast(model):
    return Seq2SeqDecoder(model, END, MAXLEN, batch_size=16)


@pytest.fixture(scope="module")
def reference(model):
    return Seq2SeqDecoder(model, END, MAXLEN, reference=True)


@pytest.mark.parametrize("topk", [1, 2, 3, 4])
def test_fast_equals_reference(fast, reference, sources, topk):
    expected = reference.beam_search_batch(sources, topk)
    assert fast.beam_search_batch(sources, topk) == expected
    lengths = {len(ids) for ids in expected}
    assert 1 in lengths and MAXLEN in lengths and len(lengths) >= 4


def test_greedy_equals_reference_greedy(fast, reference, sources):
    expected = [
        [
            int(i)
            for i in reference.recompute.greedy_search([ids, [0] * len(ids)])
        ]
        for ids in sources
    ]
    assert fast.greedy_batch(sources) == expected


def test_nbest_equals_reference(fast, reference, sources):
    got = fast.beam_search_batch(sources, 3, nbest=True)
    expected = reference.beam_search_batch(sources, 3, nbest=True)
    assert [[ids for ids, _ in n] for n in got] == [
        [ids for ids, _ in n] for n in expected
    ]
    for mine, theirs in zip(got, expected):
        assert [s for _, s in mine] == pytest.approx(
            [s for _, s in theirs], abs=1e-4
        )
    assert any(len(n) > 1 for n in got)  # beams left ended on the way
    assert [n[0][0] for n in got] == fast.beam_search_batch(sources, 3)


def test_title_independent_of_batch(fast, sources):
    """Alone (short bucket, copies as filler) = in a mixed batch."""
    together = fast.beam_search_batch(sources, 3)
    alone = [fast.beam_search_batch([ids], 3)[0] for ids in sources[:4]]
    assert alone == together[:4]
    reordered = fast.beam_search_batch(sources[::-1], 3)
    assert reordered[::-1] == together


def test_progress_bar_changes_nothing(fast, reference, sources):
    assert fast.greedy_batch(sources, progress=True) == fast.greedy_batch(
        sources
    )
    assert reference.beam_search_batch(
        sources[:2], 1, progress=True
    ) == reference.beam_search_batch(sources[:2], 1)


def test_source_too_long_is_an_error(fast):
    with pytest.raises(ValueError, match="max_position_embeddings"):
        fast.beam_search_batch([[CLS] + [5] * (64 - MAXLEN) + [END]], 1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda d: d.beam_search_batch([[CLS, 5], []], 1), ValueError, "1"),
        (lambda d: d.beam_search_batch([[CLS, 5]], 0), ValueError, "topk"),
        (lambda d: d.sample_batch([[CLS, 5]], n=0), ValueError, "n must"),
        (lambda d: d.beam_search_batch("你好", 1), TypeError, "str"),
    ],
)
def test_bad_sources_and_counts_are_named_before_decoding(
    fast, call, error, message
):
    with pytest.raises(error, match=message):
        call(fast)


def test_no_sources_no_titles(fast):
    """An empty list is no error: nothing to decode, nothing compiled."""
    assert fast.beam_search_batch([], 3) == []
    assert fast.sample_batch([], n=2) == []


def test_no_retrace_and_new_weights_used(sources):
    """Two batches of one bucket, every step: one trace each. Weights
    changed afterwards are used without tracing again."""
    model = tiny_unilm()
    decoder = Seq2SeqDecoder(model, END, MAXLEN, batch_size=4)
    first = decoder.beam_search_batch(sources[:8], 2)  # bucket 32, 2 batches
    assert dict(decoder.trace_counts) == {"encode": 1, "step": 1}
    bias = model.bert_network["MLM-Bias"].bias
    bias.assign(np.asarray(bias.numpy()) + np.linspace(0, 1, VOCAB))
    second = decoder.beam_search_batch(sources[:8], 2)
    assert dict(decoder.trace_counts) == {"encode": 1, "step": 1}
    reference = Seq2SeqDecoder(model, END, MAXLEN, reference=True)
    assert second[:4] == reference.beam_search_batch(sources[:4], 2)
    assert second != first


# UniLM sampling -------------------------------------------------------------


def allowed_tokens(probas, topk, topp):
    """The tokens top-k then top-p may emit, from sorted probabilities."""
    order = np.argsort(-probas)
    if topk is not None:
        order = order[:topk]
    if topp is not None:
        kept = probas[order] / probas[order].sum()
        order = order[: int(np.searchsorted(np.cumsum(kept), topp)) + 1]
    return set(order.tolist())


@pytest.mark.parametrize("topk, topp", [(3, None), (None, 0.3), (5, 0.5)])
def test_sample_batch_stays_in_allowed_set(
    fast, reference, sources, topk, topp
):
    samples = fast.sample_batch(sources[:4], n=2, topk=topk, topp=topp, seed=0)
    recompute = reference.recompute
    for source, per_source in zip(sources[:4], samples):
        assert len(per_source) == 2
        for ids in per_source:
            for t, token in enumerate(ids):
                probas, _ = recompute.predict(
                    [np.array([source]), np.zeros((1, len(source)), int)],
                    np.array([ids[:t]], dtype=int),
                    None,
                )
                assert token in allowed_tokens(probas[0], topk, topp)


def test_sample_batch_reproducible(fast, sources):
    first = fast.sample_batch(sources, n=2, topk=5, seed=7)
    assert fast.sample_batch(sources, n=2, topk=5, seed=7) == first
    assert fast.sample_batch(sources, n=2, topk=5, seed=8) != first


# Convenience ----------------------------------------------------------------


class CharTokenizer:
    """Enough of `data.Tokenizer` for `generate`: one id per character."""

    def encode(self, text, maxlen=None):
        ids = [CLS] + [4 + ord(c) % (VOCAB - 4) for c in text] + [END]
        if maxlen is not None and len(ids) > maxlen:
            ids = ids[: maxlen - 1] + [END]
        return ids, [0] * len(ids)

    def decode(self, ids):
        return "".join(chr(ord("a") + i % 26) for i in ids if i != END)


def test_generate_batch_decodes_titles(fast):
    tokenizer = CharTokenizer()
    texts = ["hello world", "a much longer text " * 10]
    titles = fast.generate_batch(texts, tokenizer, topk=2)
    sources = [tokenizer.encode(t, maxlen=64 - MAXLEN)[0] for t in texts]
    expected = fast.beam_search_batch(sources, 2)
    assert titles == [tokenizer.decode(ids) for ids in expected]
    assert fast.generate(texts[0], tokenizer, topk=2) == titles[0]


# Repetition options ---------------------------------------------------------


def test_no_repeat_ngram_on_toy_predictor():
    """A predictor that loves token 0 repeats it; n-gram blocking stops
    the repeat at the n-gram level."""

    def conditional(prefix):
        return np.array([0.7, 0.2, 0.1, 0.0])

    decoder = TablePredictor(conditional, end_id=3, maxlen=6)
    assert list(decoder.beam_search([], 1)) == [0] * 6
    decoder.repetition = Repetition(no_repeat_ngram_size=2)
    assert list(decoder.beam_search([], 1)) == [0, 0, 1, 0, 2, 0]
    decoder.repetition = Repetition(no_repeat_ngram_size=1)
    assert list(decoder.beam_search([], 1))[:3] == [0, 1, 2]


def test_repetition_penalty_on_toy_predictor():
    def conditional(prefix):
        return np.array([0.5, 0.3, 0.2, 0.0])

    decoder = TablePredictor(conditional, end_id=3, maxlen=3)
    assert list(decoder.beam_search([], 1)) == [0, 0, 0]
    decoder.repetition = Repetition(penalty=2.0)
    # Seen tokens count as p^2: 0.5^2 < 0.3 picks token 1 second; then
    # 0.5^2 > 0.2 > 0.3^2 picks token 0 again.
    assert list(decoder.beam_search([], 1)) == [0, 1, 0]


def test_fast_equals_reference_with_repetition_options(fast, model, sources):
    """The fast path fetches topk + maxlen candidates a row for these."""
    options = dict(no_repeat_ngram_size=2, repetition_penalty=1.5)
    guarded = Seq2SeqDecoder(model, END, MAXLEN, batch_size=16, **options)
    reference = Seq2SeqDecoder(model, END, MAXLEN, reference=True, **options)
    got = guarded.beam_search_batch(sources, 2)
    assert got == reference.beam_search_batch(sources, 2)
    assert got != fast.beam_search_batch(sources, 2)
    blocked = Repetition(no_repeat_ngram_size=2)
    for ids in got:
        assert not blocked.banned(ids[:-1]) & {ids[-1]}


# Length penalty and minimum length -----------------------------------------


def short_or_long(prefix):
    """Tokens a = 0, b = 1, end = 2: [end] is likelier than [a, end]."""
    table = {(): [0.48, 0.02, 0.5], (0,): [0.005, 0.005, 0.99]}
    return np.array(table.get(prefix, [0.0, 0.0, 1.0]))


def test_length_normalised_is_gnmt():
    assert length_normalised(-2.0, 7, 1.0) == pytest.approx(-2.0 / 2.0)
    assert length_normalised(-2.0, 1, 0.0) == -2.0
    assert length_normalised(-3.0, 4, 2.0) == pytest.approx(-3.0 / 1.5**2)


@pytest.mark.parametrize(
    "alpha, expected", [(None, [2]), (0.0, [2]), (1.0, [0, 2])]
)
def test_length_penalty_changes_the_winner_as_by_hand(alpha, expected):
    """By hand: [end] scores log 0.5 = -0.693 at |y| = 1 (lp = 1);
    [a, end] log 0.48 + log 0.99 = -0.744 at |y| = 2, lp = (7/6)^α: for
    α = 1 -0.638, which beats -0.693; for α = 0 it does not.
    bert4keras's rule (None) returns [end] at once, the best beam having
    ended."""
    short = math.log(0.5 + 1e-12)
    long = math.log(0.48 + 1e-12) + math.log(0.99 + 1e-12)
    if alpha is not None:
        assert (long / (7 / 6) ** alpha > short) == (expected == [0, 2])
    decoder = TablePredictor(short_or_long, end_id=2, maxlen=4)
    decoder.length_penalty = alpha
    state = decoder.run_beam_search([], topk=2)
    assert list(state.result) == expected
    if alpha is not None:
        scores = dict((tuple(ids), s) for ids, s in state.nbest())
        assert scores[(2,)] == pytest.approx(short)
        assert scores[(0, 2)] == pytest.approx(long / (7 / 6) ** alpha)


def test_length_penalty_runs_until_every_beam_ended_or_maxlen():
    """Under GNMT's rule a beam that never ends is cut at maxlen and then
    competes, length-normalised, with those that ended; as in bert4keras
    the beam narrows when one ends ([end] at step 1: one beam left)."""

    def conditional(prefix):
        return np.array([0.9, 0.1])  # token 0 likely, end = 1 rare

    decoder = TablePredictor(conditional, end_id=1, maxlen=3)
    decoder.length_penalty = 0.0
    state = decoder.run_beam_search([], topk=2)
    assert list(state.result) == [0, 0, 0]
    assert [ids for ids, _ in state.nbest()] == [[0, 0, 0], [1]]
    assert state.result_score == pytest.approx(3 * math.log(0.9 + 1e-12))


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        dict(length_penalty=1.0),
        dict(length_penalty=0.0, minlen=3),
        dict(length_penalty=-0.5),
        dict(minlen=4),
    ],
)
def test_fast_equals_reference_with_length_options(
    fast, model, sources, options
):
    guarded = Seq2SeqDecoder(model, END, MAXLEN, batch_size=16, **options)
    reference = Seq2SeqDecoder(model, END, MAXLEN, reference=True, **options)
    for topk in (1, 3):
        got = guarded.beam_search_batch(sources, topk, nbest=True)
        expected = reference.beam_search_batch(sources, topk, nbest=True)
        assert [[ids for ids, _ in n] for n in got] == [
            [ids for ids, _ in n] for n in expected
        ]
        for mine, theirs in zip(got, expected):
            assert [s for _, s in mine] == pytest.approx(
                [s for _, s in theirs], abs=1e-4
            )
    titles = [n[0][0] for n in got]
    # The options change titles (beam 3), so the comparison can fail.
    assert titles != fast.beam_search_batch(sources, 3)
    if "minlen" in options:
        assert min(len(ids) for ids in titles) >= options["minlen"]


# The public face ------------------------------------------------------------


def test_decoders_are_exported_from_models():
    import models

    assert models.Seq2SeqDecoder is Seq2SeqDecoder
    assert models.AutoRegressiveDecoder is AutoRegressiveDecoder


def test_uncompiled_decoder_gives_the_same_titles(model, fast, sources):
    """jit_compile=False runs the cached pass eagerly on JAX."""
    eager = Seq2SeqDecoder(model, END, MAXLEN, jit_compile=False)
    got = eager.beam_search(sources[5], 3, nbest=True)
    expected = fast.beam_search(sources[5], 3, nbest=True)
    assert [ids for ids, _ in got] == [ids for ids, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected])


def test_mixed_precision_model_computes_and_decodes_in_its_dtype(sources):
    """Every layer inside the blocks (attention projections too) takes the
    model's policy; the decoder's cache then holds one dtype and the
    search runs (it stopped on a bfloat16 + float32 add before)."""
    model = build_transformer_model(
        None, application="unilm", dtype="mixed_bfloat16", **TINY_DECODER
    )
    network = model.bert_network
    attention = network["Transformer-0-MultiHeadSelfAttention"]
    for layer in (attention, attention.q_dense, attention.o_dense):
        assert layer.compute_dtype == "bfloat16", layer.name
    assert network["MLM-Activation"].compute_dtype == "float32"
    titles = Seq2SeqDecoder(model, END, MAXLEN, batch_size=4).beam_search_batch(
        sources[:4], 2
    )
    assert len(titles) == 4 and all(len(t) <= MAXLEN for t in titles)


# Batch sizes by device memory -------------------------------------------------


def test_sources_per_batch_fits_the_memory_share():
    config = BertConfig()  # BERT-base
    assert sources_per_batch(config, 3, 224, 32, 2, None) == 32
    previous = 0
    for gib in (0.001, 0.5, 4, 40, 140):
        free = int(gib * 2**30)
        size = sources_per_batch(config, 3, 224, 32, 2, free)
        assert size & (size - 1) == 0 and 1 <= size <= MAX_BATCH_SIZE
        assert size >= previous
        if 1 < size < MAX_BATCH_SIZE:
            need = decoding_bytes(config, 3, 224, 32, 2)
            assert size * need <= MEMORY_SHARE * free < 2 * size * need
        previous = size
    assert previous == MAX_BATCH_SIZE  # 140 GiB holds more than the cap
    wide = sources_per_batch(config, 8, 224, 32, 2, 4 * 2**30)
    assert wide <= sources_per_batch(config, 3, 224, 32, 2, 4 * 2**30)


def test_auto_batch_size_on_a_cpu(model, sources):
    """32 sources where device memory is unknown, fewer for a small call."""
    decoder = Seq2SeqDecoder(model, END, MAXLEN)
    assert decoder.batch_size == "auto"
    assert decoder.sources_per_batch(100, 3) == DEFAULT_BATCH_SIZE
    assert decoder.sources_per_batch(len(sources), 3) == 16
    assert decoder.sources_per_batch(1, 3) == 1
    assert (
        Seq2SeqDecoder(model, END, 4, batch_size=5).sources_per_batch(100, 3)
        == 5
    )


@pytest.mark.slow
def test_auto_batch_size_decodes_the_same_titles(model, sources, fast):
    """Titles do not depend on the batch: auto (8 here) = fixed 16."""
    decoder = Seq2SeqDecoder(model, END, MAXLEN)
    got = decoder.beam_search_batch(sources[:5], 2)
    assert got == fast.beam_search_batch(sources[:5], 2)
