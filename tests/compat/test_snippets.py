"""compat.snippets against bert4keras 0.11.5's own snippets.py.

The reference functions and classes are pure NumPy (see reference.py):
decoding loops run on a toy next-token table, generators on lists.
"""

import json

import keras
import numpy as np
import pytest

from compat import UnsupportedError
from compat import snippets
from tests.common import CSL_DEV
from tests.common import require_shared
from tests.compat import reference

VOCAB, END = 12, 3


@pytest.fixture(scope="module")
def theirs():
    return reference.snippets()


def toy_logits(inputs, output_ids, step_bias=0.0):
    """Next-token logits of a fixed random table: a function of the last
    output token, the output length and the source's first token."""
    table = np.random.default_rng(7).normal(size=(VOCAB + 1, 40, VOCAB)) * 2
    rows = []
    for source, output in zip(inputs[0], output_ids):
        last = output[-1] if len(output) else VOCAB
        rows.append(table[last, len(output) + source[0] % 5])
    return np.array(rows) + step_bias


def decoders(theirs, rtype="probas", use_states=False):
    """The same toy decoder on bert4keras's base class and on ours."""

    def make(base):
        class Toy(base):
            @base.wraps(default_rtype=rtype, use_states=use_states)
            def predict(self, inputs, output_ids, states):
                logits = toy_logits(inputs, output_ids)
                out = logits if rtype == "logits" else softmax(logits)
                if use_states:
                    states = (states or 0) + 1
                    return out * (1 + 0.01 * states), states
                return out

        return Toy

    return make(theirs.AutoRegressiveDecoder), make(
        snippets.AutoRegressiveDecoder
    )


def softmax(x):
    x = np.exp(x - x.max(-1, keepdims=True))
    return x / x.sum(-1, keepdims=True)


SOURCES = [[5, 6, 7], [1, 9], [8], [4, 4, 4, 2], [0, 11, 3]]


def assert_same_beams(Theirs, Ours, minlen):
    options = dict(start_id=None, end_id=END, maxlen=9, minlen=minlen)
    reference_decoder, ours = Theirs(**options), Ours(**options)
    for source in SOURCES:
        inputs = [source, [0] * len(source)]
        for topk in (1, 2, 4):
            for temperature, min_ends in ((1, 1), (0.7, 1), (1.5, 2)):
                args = (inputs, topk, None, temperature, min_ends)
                np.testing.assert_array_equal(
                    ours.beam_search(*args),
                    reference_decoder.beam_search(*args),
                )


@pytest.mark.parametrize("rtype", ["probas", "logits"])
@pytest.mark.parametrize("use_states", [False, True])
def test_beam_search_equals_bert4keras(theirs, rtype, use_states):
    assert_same_beams(*decoders(theirs, rtype, use_states), minlen=1)


def test_beam_search_with_minlen_equals_bert4keras(theirs):
    assert_same_beams(*decoders(theirs), minlen=3)


@pytest.mark.parametrize("rtype", ["probas", "logits"])
def test_random_sample_equals_bert4keras(theirs, rtype):
    Theirs, Ours = decoders(theirs, rtype)
    options = dict(start_id=1, end_id=END, maxlen=8)
    reference_decoder, ours = Theirs(**options), Ours(**options)
    for seed, source in enumerate(SOURCES):
        inputs = [source, [0] * len(source)]
        for topk, topp, temperature in (
            (None, None, 1),
            (3, None, 1),
            (None, 0.8, 0.7),
            (4, 0.9, 1),
        ):
            args = (inputs, 4, topk, topp, None, temperature)
            np.random.seed(seed)
            expected = reference_decoder.random_sample(*args)
            np.random.seed(seed)
            got = ours.random_sample(*args)
            assert [list(x) for x in got] == [list(x) for x in expected]


def test_set_rtype_passes_the_step_number(theirs):
    """bert4keras < 0.8: `predict(inputs, output_ids, step)`; here it is
    `wraps(use_states=True)` with the step as state."""
    steps = []

    class Old(snippets.AutoRegressiveDecoder):
        @snippets.AutoRegressiveDecoder.set_rtype("probas")
        def predict(self, inputs, output_ids, step):
            steps.append(step)
            return softmax(toy_logits(inputs, output_ids, step_bias=0.1 * step))

    class Reference(theirs.AutoRegressiveDecoder):
        @theirs.AutoRegressiveDecoder.wraps("probas", use_states=True)
        def predict(self, inputs, output_ids, states):
            step = states or 0
            logits = toy_logits(inputs, output_ids, step_bias=0.1 * step)
            return softmax(logits), step + 1

    options = dict(start_id=None, end_id=END, maxlen=6)
    for source in SOURCES:
        steps.clear()
        inputs = [source, [0] * len(source)]
        ours = Old(**options).beam_search(inputs, 2)
        expected = Reference(**options).beam_search(inputs, 2)
        np.testing.assert_array_equal(ours, expected)
        assert steps == list(range(len(steps))) and steps


def test_last_token_model_is_quiet_and_takes_the_last_position(capsys):
    tokens = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(20, 4)(tokens)
    model = keras.Model(tokens, keras.layers.Dense(3)(hidden))
    decoder = snippets.AutoRegressiveDecoder(None, END, 5)
    x = np.random.default_rng(0).integers(0, 20, (3, 6))
    capsys.readouterr()
    last = decoder.last_token(model).predict(x)
    assert capsys.readouterr().out == ""
    assert isinstance(last, np.ndarray) and last.shape == (3, 3)
    np.testing.assert_allclose(
        last, model.predict(x, verbose=0)[:, -1], rtol=1e-6
    )
    assert decoder.last_token(model) is decoder.last_token(model)


class Pairs(snippets.DataGenerator):
    def __iter__(self, random=False):
        batch = []
        for is_end, item in self.sample(random):
            batch.append(item)
            if len(batch) == self.batch_size or is_end:
                ids = snippets.sequence_padding([[1] * n for n in batch])
                yield [ids, ids * 0], None
                batch = []


class Stream:
    """Data without a length: shuffled through bert4keras's buffer."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


@pytest.mark.parametrize("data", [list(range(2, 25)), Stream(23)])
def test_sample_order_equals_bert4keras(theirs, data):
    ours = Pairs(data, batch_size=4, buffer_size=5)
    reference_generator = theirs.DataGenerator(
        data, batch_size=4, buffer_size=5
    )
    assert ours.steps == reference_generator.steps
    assert ours.buffer_size == reference_generator.buffer_size
    for random in (False, True):
        np.random.seed(11)
        expected = list(reference_generator.sample(random))
        np.random.seed(11)
        assert list(ours.sample(random)) == expected


def test_forfit_repeats_passes_in_keras_form():
    generator = Pairs(list(range(2, 9)), batch_size=3)
    assert len(generator) == 3
    stream = generator.forfit(random=False)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert isinstance(stream, tf.data.Dataset)
        stream = stream.as_numpy_iterator()
    batches = [next(stream) for _ in range(7)]
    lengths = [batch[0][0].shape[1] for batch in batches]
    assert lengths == [4, 7, 8, 4, 7, 8, 4]  # passes repeat, lengths vary
    assert all(len(batch) == 1 for batch in batches)  # the None target dropped
    tests = generator.fortest()
    if keras.backend.backend() == "tensorflow":
        tests = tests.as_numpy_iterator()
    first = next(tests)
    assert len(first) == 1 and first[0][0].shape == (3, 4)


@pytest.mark.parametrize(
    "batch, expected",
    [
        (lambda a, b: ((a, b), None), lambda a, b: ((a, b),)),
        (lambda a, b: ([a, b], b), lambda a, b: ((a, b), b)),
        (lambda a, b: (a, [b, b], None), lambda a, b: (a, (b, b))),
    ],
)
def test_forfit_batches_in_the_shape_keras_reads(batch, expected):
    a, b = np.ones((2, 3), "int64"), np.zeros((2, 3), "int64")

    class One(snippets.DataGenerator):
        def __iter__(self, random=False):
            yield batch(a, b)

    stream = One([0]).forfit()
    if keras.backend.backend() == "tensorflow":
        stream = stream.as_numpy_iterator()
    got, want = next(stream), expected(a, b)
    assert keras.tree.map_structure(np.shape, got) == keras.tree.map_structure(
        np.shape, want
    )
    for x, y in zip(keras.tree.flatten(got), keras.tree.flatten(want)):
        np.testing.assert_array_equal(x, y)


def test_empty_data_is_a_clear_error():
    with pytest.raises(ValueError, match="no data"):
        list(Pairs([], batch_size=2).sample())


def test_to_dataset_with_names_and_padding_feeds_fit():
    """As bert4keras's multi-GPU example: samples named after the inputs."""
    pytest.importorskip("tensorflow")
    from compat.models import build_transformer_model
    from compat.optimizers import Adam
    from tests.compat.test_layers import CONFIG
    from tests.compat.test_layers import CrossEntropy

    class Samples(snippets.DataGenerator):
        def __iter__(self, random=False):
            for is_end, n in self.sample(random):
                yield [2] + [5] * n + [3, 7, 3], [0] * (n + 2) + [1, 1]

    dataset = Samples([1, 4, 2, 6], batch_size=2).to_dataset(
        types=("float32", "float32"),
        shapes=([None], [None]),
        names=("Input-Token", "Input-Segment"),
        padded_batch=True,
    )
    batch = next(iter(dataset))
    assert set(batch) == {"Input-Token", "Input-Segment"}
    assert batch["Input-Token"].shape[0] == 2
    base = build_transformer_model(dict(CONFIG), application="unilm")
    model = keras.Model(
        base.inputs, CrossEntropy(2)(base.inputs + base.outputs)
    )
    model.compile(optimizer=Adam(1e-3))
    history = model.fit(dataset, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_text_segmentate_equals_bert4keras(theirs):
    lines = require_shared(CSL_DEV).read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t")[1] for line in lines[:150]]
    texts += ["", "   ", "短", "。。。", "a\nb\n\nc" * 20]
    cases = [
        ("\n。！？!?；;，, ", "；;，, "),
        ("。", None),
        ("\n", None),
        ("", None),
    ]
    for text in texts:
        for maxlen in (1, 8, 30, 126):
            for seps, strips in cases:
                assert snippets.text_segmentate(
                    text, maxlen, seps, strips
                ) == theirs.text_segmentate(text, maxlen, seps, strips)


def outcome(function, *args):
    """The result, or the kind of error (e.g. popping past a short list)."""
    try:
        return function(*args)
    except IndexError:
        return IndexError


def test_truncate_and_padding_equal_bert4keras(theirs):
    rng = np.random.default_rng(3)
    for _ in range(200):
        lengths = rng.integers(0, 9, size=rng.integers(1, 4))
        lists = [list(rng.integers(0, 50, n)) for n in lengths]
        copies = [list(x) for x in lists]
        maxlen, index = int(rng.integers(0, 20)), int(rng.choice([-1, -2, 1]))
        ours = outcome(snippets.truncate_sequences, maxlen, index, *lists)
        expected = outcome(theirs.truncate_sequences, maxlen, index, *copies)
        assert ours == expected and lists == copies
    for seq_dims, length, mode in (
        (1, None, "post"),
        (1, 5, "pre"),
        (2, None, "post"),
        (2, [3, 2], "pre"),
    ):
        inputs = [
            rng.integers(1, 9, size=(rng.integers(1, 6), width))
            for width in rng.integers(1, 4, size=4)
        ]
        if seq_dims == 1:  # only the first axis may differ
            inputs = [x[:, :1] for x in inputs]
        np.testing.assert_array_equal(
            snippets.sequence_padding(inputs, length, -1, seq_dims, mode),
            theirs.sequence_padding(inputs, length, -1, seq_dims, mode),
        )


def test_small_helpers_equal_bert4keras(theirs):
    x = np.random.default_rng(0).normal(size=(3, 5))
    np.testing.assert_allclose(
        snippets.softmax(x), theirs.softmax(x), rtol=1e-12
    )
    np.testing.assert_allclose(
        snippets.softmax(x, 0), theirs.softmax(x, 0), rtol=1e-12
    )
    assert snippets.is_string("a") and not snippets.is_string(b"a")
    a, b = snippets.to_array([1, 2], [[3]])
    assert a.shape == (2,) and b.shape == (1, 1)
    assert snippets.to_array([1]).shape == (1,)
    for text in ("ÅΣΣ Café İ", "ΟΔΟΣ"):
        assert snippets.lowercase_and_normalize(text) == (
            theirs.lowercase_and_normalize(text)
        )
    from compat.snippets import uniout  # bert4keras's Python 2 shim

    assert uniout is None


def test_open_is_pythons(tmp_path):
    path = tmp_path / "records.json"
    json.dump([{"问题": 1}], snippets.open(path, "w", encoding="utf-8"))
    assert json.load(snippets.open(path, encoding="utf-8")) == [{"问题": 1}]
    with snippets.open(path, encoding="utf-8") as reader:
        assert reader.read().startswith("[")
    with pytest.raises(UnsupportedError, match="indexable"):
        snippets.open(path, indexable=True)
