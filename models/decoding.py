"""Autoregressive decoding: bert4keras's base class and a fast UniLM decoder.

- `AutoRegressiveDecoder` is bert4keras 0.11's base class with the same
  behaviour: subclass it, write `predict` under `@AutoRegressiveDecoder.wraps`,
  call `beam_search` or `random_sample`.
- `Seq2SeqDecoder` writes titles with a UniLM model. By default it encodes
  each source once into a key/value cache (`BertNetwork.build_cache`), then
  feeds one token per step for many sources and their beams at once
  (`BertNetwork.call_with_cache`), through one compiled step whose shapes
  repeat. `reference=True` instead recomputes [source + output] at every
  step, as bert4keras's `AutoTitle` does; it is the reference the fast path
  is tested against.

Each decoder has one loop (`AutoRegressiveDecoder.decode`,
`Seq2SeqDecoder.decode_batch`) and takes its rules from `models/search.py`:
which beams are kept, how tokens are drawn and when a search stops are
written once, there, for both. How `Seq2SeqDecoder` groups sources into
batches (their size, order and shape) is `models/decoding_batches.py`.
"""

import collections
import weakref

import keras
import numpy as np
from keras import ops

from data.vocab import PAD_ID
from models.backend import compile_function
from models.backend import free_device_memory
from models.decoding_batches import check_sources
from models.decoding_batches import decode_by_length
from models.decoding_batches import pack
from models.decoding_batches import sources_per_batch
from models.decoding_batches import with_progress
from models.search import LOG_EPSILON
from models.search import BeamSearch
from models.search import BeamState
from models.search import Repetition
from models.search import SampleState
from models.search import Sampling
from models.search import softmax

# model -> the same model reading one given position (`RecomputeDecoder`).
POSITION_MODELS = weakref.WeakKeyDictionary()


class AutoRegressiveDecoder:
    """bert4keras 0.11's decoding base class, same names and behaviour.

    Subclass it and write `predict(self, inputs, output_ids, states)` under
    `@AutoRegressiveDecoder.wraps(default_rtype=..., use_states=...)`; it
    returns, for every row of `output_ids`, the next token's probabilities
    (or logits), and new states when `use_states`.

    `repetition` (a `Repetition`, None by default as in bert4keras) applies
    n-gram blocking / a repetition penalty to beam search; `length_penalty`
    (None by default: bert4keras's rule) GNMT's length normalisation (see
    `models.search.BeamState`). `minlen` is bert4keras's: the stop rule
    applies once `minlen` tokens are out, so an end token drawn earlier is
    kept as a token and does not end the beam.
    """

    repetition = None
    length_penalty = None

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = maxlen
        self.minlen = minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[self.start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Give `predict` the `temperature` and `rtype` handling of bert4keras.

        The wrapped method returns `(probas or log-probas, states)`.
        """

        def actual_decorator(predict):
            def new_predict(
                self,
                inputs,
                output_ids,
                states,
                temperature=1,
                rtype=default_rtype,
            ):
                assert rtype in ("probas", "logits")
                prediction = predict(self, inputs, output_ids, states)
                if not use_states:
                    prediction = (prediction, None)
                probas, states = prediction
                if default_rtype == "logits":
                    probas = softmax(probas / temperature)
                elif temperature != 1:
                    probas = np.power(probas, 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                if rtype == "probas":
                    return probas, states
                return np.log(probas + LOG_EPSILON), states

            return new_predict

        return actual_decorator

    def last_token(self, model):
        """A model returning only the last position's output (cached)."""
        if model not in self.models:
            take_last = keras.layers.Lambda(lambda x: x[:, -1])
            outputs = [take_last(output) for output in model.outputs]
            if len(outputs) == 1:
                outputs = outputs[0]
            self.models[model] = keras.Model(model.inputs, outputs)
        return self.models[model]

    def predict(self, inputs, output_ids, states=None):
        """Next-token prediction for every row; write it in a subclass."""
        raise NotImplementedError

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1):
        """The best sequence found with a beam of `topk` (see module doc)."""
        return self.run_beam_search(
            inputs, topk, states, temperature, min_ends
        ).result

    def run_beam_search(
        self, inputs, topk, states=None, temperature=1, min_ends=1
    ):
        """`beam_search`, returning the whole `BeamState` (for n-best)."""
        beams = BeamState(
            self.first_output_ids,
            topk,
            self.end_id,
            self.minlen,
            min_ends,
            self.repetition,
            self.length_penalty,
        )
        return self.decode(beams, inputs, states, temperature, "logits")

    def greedy_search(self, inputs, states=None, temperature=1, min_ends=1):
        """Greedy decoding: bert4keras's beam search with `topk=1`."""
        return self.beam_search(inputs, 1, states, temperature, min_ends)

    def random_sample(
        self,
        inputs,
        n,
        topk=None,
        topp=None,
        states=None,
        temperature=1,
        min_ends=1,
    ):
        """n sampled sequences, from the top-k / top-p tokens when given.

        Draws with NumPy's global generator, as bert4keras does, so
        `np.random.seed` makes it reproducible.
        """
        samples = SampleState(
            self.first_output_ids,
            n,
            self.end_id,
            self.minlen,
            min_ends,
            topk,
            topp,
            np.random.choice,
        )
        self.decode(samples, inputs, states, temperature, "probas")
        return samples.results[0]

    def decode(self, search, inputs, states, temperature, rtype):
        """The loop of every search: predict the live rows, advance.

        `search` is a `BeamState` or a `SampleState`; returns it finished.
        """
        inputs = [np.array([i]) for i in inputs]
        for _ in range(self.maxlen):
            output_ids = search.live_output_ids
            # Every row of `inputs` is the same source: one per live row.
            rows = [np.repeat(i[:1], len(output_ids), axis=0) for i in inputs]
            scores, states = self.predict(
                rows, output_ids, states, temperature, rtype
            )
            search.advance(scores)
            if search.done:
                return search
        search.finish()
        return search


class RecomputeDecoder(AutoRegressiveDecoder):
    """bert4keras's `AutoTitle`: rerun [source + output so far] every step.

    Slow (the whole prefix and every position's MLM head at each step) but
    obviously right: it is the reference for `Seq2SeqDecoder`. One change
    from bert4keras: the prefix is padded on the right to a multiple of
    `bucket` and the last real position is read, because JAX compiles once
    per input shape; padding keys are masked, so results are unchanged.
    """

    def __init__(self, model, end_id, maxlen, minlen=1, bucket=16):
        super().__init__(None, end_id, maxlen, minlen)
        self.model = model
        self.bucket = bucket

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        length = token_ids.shape[1]
        padding = ((0, 0), (0, self.padded_length(length) - length))
        token_ids = np.pad(token_ids, padding, constant_values=PAD_ID)
        segment_ids = np.pad(segment_ids, padding)
        return self.position_model(self.model).predict_on_batch(
            [
                token_ids.astype("int32"),
                segment_ids.astype("int32"),
                np.full(len(token_ids), length - 1, dtype="int32"),
            ]
        )

    def padded_length(self, length):
        limit = self.model.bert_config.max_position_embeddings
        return min(-(-length // self.bucket) * self.bucket, limit)

    def position_model(self, model):
        """`last_token` for padded rows: the output at a given position.

        Shared by every decoder of `model`, so that a new decoder does not
        compile its shapes again.
        """
        if model not in POSITION_MODELS:
            index = keras.Input((), dtype="int32", name="Input-Position")
            pick = keras.layers.Lambda(
                lambda xs: ops.take_along_axis(
                    xs[0], xs[1][:, None, None], axis=1
                )[:, 0],
                output_shape=lambda shapes: shapes[0][:1] + shapes[0][2:],
            )
            POSITION_MODELS[model] = keras.Model(
                model.inputs + [index], pick([model.outputs[0], index])
            )
        return POSITION_MODELS[model]


class Seq2SeqDecoder:
    """Titles from a UniLM model: many sources, cached, batched, compiled.

    Sources are `token_ids` of `tokenizer.encode(text)[0]` (segment 0);
    outputs are segment 1 and include `end_id` when they ended, as in
    bert4keras. Sources are sorted by length, packed `batch_size` at a time
    (the last batch filled with copies), padded to a multiple of `bucket`,
    with one row per (source, beam); so a compiled step serves every step
    and every batch of a bucket. Rows never mix, so a source's title does
    not depend on its batch (USER-NEEDS 13).

    `batch_size='auto'` (the default) sizes batches by the accelerator's
    free memory (`sources_per_batch`: a power of two, fixed per rows per
    source, so the compiled shapes stay few), and uses
    `DEFAULT_BATCH_SIZE` where that is unknown (a CPU); a call with fewer
    sources uses the smallest power of two that holds them, not a batch
    of copies. Each step moves only the top candidates of every row to
    the host (beam search), and the chosen rows and tokens back.

    `reference=True` decodes one source at a time with `RecomputeDecoder`
    (bert4keras's AutoTitle), for checking and timing.

    `no_repeat_ngram_size` and `repetition_penalty` (see `Repetition`),
    and `length_penalty` (GNMT's α; None: bert4keras's rule, see
    `BeamState`) apply to beam search and greedy decoding on both paths,
    not to sampling. `minlen` is bert4keras's (see `AutoRegressiveDecoder`).
    """

    def __init__(
        self,
        model,
        end_id,
        maxlen,
        minlen=1,
        reference=False,
        batch_size="auto",
        bucket=32,
        jit_compile=True,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
        length_penalty=None,
    ):
        self.model, self.network = model, self.find_network(model)
        self.end_id, self.maxlen, self.minlen = end_id, maxlen, minlen
        self.reference = reference
        self.batch_size, self.bucket = batch_size, bucket
        self.jit_compile = jit_compile
        self.recompute = self.reference_decoder(model, end_id, maxlen, minlen)
        self.repetition = self.recompute.repetition = Repetition(
            no_repeat_ngram_size, repetition_penalty
        )
        self.length_penalty = self.recompute.length_penalty = length_penalty
        self.trace_counts = collections.Counter()
        self._functions = {}
        self._auto_sizes = {}

    @staticmethod
    def find_network(model):
        """The network whose cached pass decodes (`build_cache`,
        `call_with_cache`); a subclass decodes another family."""
        network = getattr(model, "bert_network", None)
        if network is None or network.application != "unilm":
            raise ValueError(
                "Seq2SeqDecoder needs a model from "
                "build_transformer_model(..., application='unilm')"
            )
        return network

    @staticmethod
    def reference_decoder(model, end_id, maxlen, minlen):
        """The one-source decoder that `reference=True` runs."""
        return RecomputeDecoder(model, end_id, maxlen, minlen)

    # One source -------------------------------------------------------------

    def beam_search(self, token_ids, topk=1, nbest=False):
        """The title ids of one source (or its n-best `(ids, score)` list).

        Compiled for batches of one, so that a loop over sources does not
        pay for `batch_size` rows each time.
        """
        return self.beam_search_batch([token_ids], topk, nbest, batch_size=1)[0]

    def generate(self, text, tokenizer, topk=1, max_source_len=None):
        """bert4keras's `AutoTitle.generate`: text in, decoded title out."""
        return self.generate_batch(
            [text], tokenizer, topk, batch_size=1, max_source_len=max_source_len
        )[0]

    # Many sources -----------------------------------------------------------

    def beam_search_batch(
        self, sources, topk=1, nbest=False, progress=False, batch_size=None
    ):
        """Title ids per source; with `nbest`, `(ids, score)` lists instead.

        The n-best list starts with the title `beam_search` returns, then
        the other complete hypotheses (ended, or cut at maxlen), best score
        first, at most `topk`. Scores are summed log-probabilities.
        `batch_size` (sources per compiled batch) defaults to the
        decoder's; each new value compiles once more.
        """
        self.check_sources(sources, topk, "topk")
        if self.reference:
            states = [
                self.recompute.run_beam_search([ids, [0] * len(ids)], topk)
                for ids in with_progress(sources, progress)
            ]
        else:
            states = decode_by_length(
                sources,
                lambda batch, size: self.decode_batch(
                    batch, size, self.beam_search_for(len(batch), size, topk)
                ),
                progress,
                batch_size or self.sources_per_batch(len(sources), topk),
            )
        if nbest:
            return [state.nbest() for state in states]
        return [[int(i) for i in state.result] for state in states]

    def greedy_batch(self, sources, progress=False, batch_size=None):
        """Greedy titles: the bert4keras beam search with `topk=1`."""
        return self.beam_search_batch(
            sources, 1, progress=progress, batch_size=batch_size
        )

    def sample_batch(
        self,
        sources,
        n=1,
        topk=None,
        topp=None,
        seed=None,
        progress=False,
        batch_size=None,
    ):
        """n sampled titles per source, with bert4keras's top-k / top-p.

        The fast path draws from `np.random.default_rng(seed)`; the
        reference from NumPy's global generator, seeded with `seed`.
        """
        self.check_sources(sources, n, "n")
        if self.reference:
            if seed is not None:
                np.random.seed(seed)
            samples = [
                self.recompute.random_sample(
                    [ids, [0] * len(ids)], n, topk, topp
                )
                for ids in with_progress(sources, progress)
            ]
        else:
            rng = np.random.default_rng(seed)
            samples = decode_by_length(
                sources,
                lambda batch, size: self.decode_batch(
                    batch,
                    size,
                    Sampling(
                        len(batch),
                        size,
                        n,
                        self.end_id,
                        self.minlen,
                        topk,
                        topp,
                        rng,
                    ),
                ),
                progress,
                batch_size or self.sources_per_batch(len(sources), n),
            )
        return [[[int(i) for i in ids] for ids in per] for per in samples]

    def generate_batch(
        self,
        texts,
        tokenizer,
        topk=1,
        batch_size=None,
        max_source_len=None,
        progress=False,
    ):
        """Decoded titles for many texts (sources cut to fit positions)."""
        if max_source_len is None:
            max_source_len = self.max_positions - self.maxlen
        sources = [
            tokenizer.encode(text, maxlen=max_source_len)[0] for text in texts
        ]
        titles = self.beam_search_batch(
            sources, topk, progress=progress, batch_size=batch_size
        )
        return [tokenizer.decode(ids) for ids in titles]

    # Batching (`models/decoding_batches.py`) ---------------------------------

    @property
    def max_positions(self):
        return self.network.config.max_position_embeddings

    def check_sources(self, sources, count, what):
        """`decoding_batches.check_sources` with this decoder's limits."""
        check_sources(sources, count, what, self.maxlen, self.max_positions)

    def sources_per_batch(self, count, rows_per_source):
        """The batch size for `count` sources of `rows_per_source` rows
        (beams or samples) each: the decoder's, or under 'auto' one sized
        by device memory once per `rows_per_source`, for the longest
        source the model takes."""
        if self.batch_size != "auto":
            return self.batch_size
        if rows_per_source not in self._auto_sizes:
            attention = self.network["Transformer-0-MultiHeadSelfAttention"]
            dtype_bytes = 2 if "16" in attention.compute_dtype else 4
            self._auto_sizes[rows_per_source] = sources_per_batch(
                self.network.config,
                rows_per_source,
                self.max_positions - self.maxlen,
                self.maxlen,
                dtype_bytes,
                free_device_memory(),
            )
        size = self._auto_sizes[rows_per_source]
        return min(size, 1 << (count - 1).bit_length())

    # The fast path: one loop on the network's cached pass -------------------

    def beam_search_for(self, sources, padded, topk):
        """A `BeamSearch`; with repetition options each row brings its
        best `topk + maxlen` candidates (see `BeamSearch`)."""
        candidates = min(
            topk + self.maxlen * self.repetition.active,
            self.network.config.vocab_size,
        )
        return BeamSearch(
            sources,
            padded,
            topk,
            candidates,
            self.end_id,
            self.minlen,
            self.repetition,
            self.length_penalty,
        )

    def decode_batch(self, batch, size, search):
        """Decode up to `size` sources at once with `search`.

        Every fast search runs here: the sources are encoded once into a
        key/value cache, then each step the host applies the search rule
        to the device's outputs (`search.advance`) and the device feeds
        the chosen tokens (`search.feed`) one position further.
        """
        token_ids, lengths = pack(batch, size, self.bucket, self.max_positions)
        width, k = search.width, search.candidates
        encode = self.function("encode", width=width, k=k)
        outputs, cache = encode(token_ids, lengths)
        step = self.function("step", k=k)
        for index in range(self.maxlen):
            search.advance(to_numpy(outputs))
            if search.done or index == self.maxlen - 1:
                break
            rows, tokens = search.feed()
            outputs, kv = step(cache, rows, tokens, np.int32(index))
            cache = cache._replace(outputs=kv)
        return search.finish()

    def encode(self, token_ids, lengths, width, k):
        """The sources' cache, with `width` rows each, and first outputs."""
        logits, cache = self.network.build_cache(
            token_ids, lengths, width, self.maxlen
        )
        return self.head(logits, k), cache

    def step(self, cache, rows, tokens, index, k):
        """Row r continues row `rows[r]` and reads `tokens[r]` at `index`.

        Returns the outputs and the outputs' part of the cache only: the
        rest does not change, and a compiled function returning it would
        copy the source cache every step.
        """
        logits, _, cache = self.network.call_with_cache(
            tokens, cache.reorder(rows), index
        )
        return self.head(logits, k), cache.outputs

    def head(self, logits, k):
        """Probabilities (k None) or the top k of `log(p + 1e-12)`."""
        probas = self.network["MLM-Activation"](logits)
        if k is None:
            return probas
        return ops.top_k(ops.log(probas + LOG_EPSILON), k)

    def function(self, name, **static):
        """`encode` / `step` compiled once per shape, with `static` fixed
        (rows per source, candidates per row); counts traces."""
        key = (name, *sorted(static.items()))
        if key not in self._functions:
            method = getattr(self, name)

            def traced(*args):
                self.trace_counts[name] += 1
                return method(*args, **static)

            self._functions[key] = compile_function(
                traced, self.model.variables, self.jit_compile
            )
        return self._functions[key]


def to_numpy(outputs):
    """Device outputs (a tensor or a tuple of them) as NumPy arrays."""
    return keras.tree.map_structure(ops.convert_to_numpy, outputs)
