"""Autoregressive decoding: bert4keras's base class and a fast UniLM decoder.

- `AutoRegressiveDecoder` is bert4keras 0.11's base class with the same
  behaviour: subclass it, write `predict` under `@AutoRegressiveDecoder.wraps`,
  call `beam_search` or `random_sample`.
- `Seq2SeqDecoder` writes titles with a UniLM model. By default it encodes
  each source once into a key/value cache, then feeds one token per step for
  many sources and their beams at once, through one compiled step whose
  shapes repeat. `reference=True` instead recomputes [source + output] at
  every step, as bert4keras's `AutoTitle` does; it is the reference the fast
  path is tested against.

Both paths choose beams with the same `BeamState`, bert4keras's rule: a
beam's score is its summed `log(p + 1e-12)`; each step keeps the `topk` best
extensions; once `minlen` tokens are out, if the best beam has ended it is
the answer, otherwise ended beams leave and `topk` shrinks to the beams left;
at `maxlen` the best-scoring beam is returned. `BeamState.nbest` lists the
other complete hypotheses with their scores; `Repetition` adds n-gram
blocking and a repetition penalty to that rule.
"""

import collections
import dataclasses
import math
import weakref

import keras
import numpy as np
from keras import ops

from models.backend import compile_function
from models.layers import MASK_BIAS

# bert4keras adds this before taking logs, so that p = 0 stays finite.
LOG_EPSILON = 1e-12

# model -> the same model reading one given position (`RecomputeDecoder`).
POSITION_MODELS = weakref.WeakKeyDictionary()


def softmax(x, axis=-1):
    """NumPy softmax, as bert4keras applies to `logits` predictions."""
    x = x - x.max(axis=axis, keepdims=True)
    x = np.exp(x)
    return x / x.sum(axis=axis, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Repetition:
    """Options against repetitive titles (USER-NEEDS 12), for beam search.

    `no_repeat_ngram_size` n > 0: no n-gram occurs twice in an output.
    `penalty` > 1: a token already in the output has its log-probability
    multiplied by `penalty` (the CTRL / Hugging Face rule, on log-probas).
    Both look at the output only, not at the source.
    """

    no_repeat_ngram_size: int = 0
    penalty: float = 1.0

    @property
    def active(self):
        return self.no_repeat_ngram_size > 0 or self.penalty != 1.0

    def apply(self, output_ids, logp, token_ids=None):
        """Penalised copy of `logp` (candidates as in `BeamState.advance`)."""
        logp = np.array(logp, dtype=float)
        for row, ids in enumerate(output_ids):
            tokens = (
                np.arange(logp.shape[1])
                if token_ids is None
                else token_ids[row]
            )
            if self.penalty != 1.0:
                logp[row, np.isin(tokens, ids)] *= self.penalty
            banned = self.banned(list(ids))
            if banned:
                logp[row, np.isin(tokens, list(banned))] = -np.inf
        return logp

    def banned(self, ids):
        """Tokens that would repeat an n-gram after `ids`."""
        n = self.no_repeat_ngram_size
        if n == 0 or len(ids) < n - 1:
            return set()
        prefix = ids[len(ids) - n + 1 :]
        return {
            ids[j + n - 1]
            for j in range(len(ids) - n + 1)
            if ids[j : j + n - 1] == prefix
        }


class BeamState:
    """The live beams of one source under bert4keras's stop rule.

    The reference and the fast path both pick, stop and drop with this class;
    only where their log-probabilities come from differs, so the two cannot
    drift apart in the bookkeeping.
    """

    def __init__(
        self, first_ids, topk, end_id, minlen=1, min_ends=1, repetition=None
    ):
        self.repetition = repetition
        self.output_ids = np.asarray(first_ids, dtype=int)
        self.scores = np.zeros(len(self.output_ids))
        self.parents = np.zeros(len(self.output_ids), dtype=int)
        self.beam_size = self.topk = topk
        self.end_id, self.minlen, self.min_ends = end_id, minlen, min_ends
        self.result = self.result_score = None
        self.finished = []  # (ids, score) of beams that left ended

    def __len__(self):
        return len(self.output_ids)

    @property
    def done(self):
        return self.result is not None

    def advance(self, logp, token_ids=None):
        """Extend every beam by one token and apply the stop rule.

        `logp[i, j]` is the log-probability of candidate j after beam i;
        candidate j is token j, or `token_ids[i, j]` when the caller passes
        only each beam's best few (the fast path). `parents[r]` tells which
        old beam the new beam r extends.
        """
        if self.repetition is not None and self.repetition.active:
            logp = self.repetition.apply(self.output_ids, logp, token_ids)
        scores = self.scores.reshape((-1, 1)) + logp
        # More beams than candidates would make argpartition fail; keep all.
        k = min(self.topk, scores.size)
        indices = scores.argpartition(-k, axis=None)[-k:]
        rows, cols = np.divmod(indices, scores.shape[1])
        tokens = cols if token_ids is None else token_ids[rows, cols]
        self.output_ids = np.concatenate(
            [self.output_ids[rows], tokens.reshape((-1, 1))], 1
        )
        self.scores = np.take_along_axis(scores, indices, axis=None)
        self.parents = rows
        if self.output_ids.shape[1] >= self.minlen:
            self._stop_or_drop()

    def _stop_or_drop(self):
        end_counts = (self.output_ids == self.end_id).sum(1)
        best = self.scores.argmax()
        keep = end_counts < self.min_ends
        for row in np.flatnonzero(~keep):
            if row != best:
                self.finished.append((self.output_ids[row], self.scores[row]))
        if end_counts[best] == self.min_ends or not keep.any():
            # The second case is only reachable when ends came before
            # `minlen`; bert4keras would go on with no beam and crash.
            return self._stop(best)
        if keep.all():
            return
        self.output_ids = self.output_ids[keep]
        self.scores = self.scores[keep]
        self.parents = self.parents[keep]
        self.topk = int(keep.sum())

    def _stop(self, row):
        self.result = self.output_ids[row]
        self.result_score = self.scores[row]

    def finish(self):
        """At `maxlen`: the best beam, ended or not; the others complete."""
        best = self.scores.argmax()
        for row in range(len(self)):
            if row != best:
                self.finished.append((self.output_ids[row], self.scores[row]))
        self._stop(best)

    def nbest(self):
        """The answer first, then the other complete hypotheses by score.

        Complete means ended (on the way or beside the answer) or cut at
        `maxlen`; beams still growing when the answer ended are not titles
        and are left out. At most `topk` entries.
        """
        others = sorted(self.finished, key=lambda pair: -pair[1])
        pairs = [(self.result, self.result_score)] + others
        return [
            ([int(i) for i in ids], float(score))
            for ids, score in pairs[: self.beam_size]
        ]


def filter_probas(probas, topk=None, topp=None):
    """bert4keras's top-k then top-p filtering of normalised probabilities.

    Returns the filtered, renormalised probabilities and, when filtered,
    the token id of each column (None: column j is token j).
    """
    ids = None
    if topk is not None:
        ids = probas.argpartition(-topk, axis=1)[:, -topk:]
        probas = np.take_along_axis(probas, ids, axis=1)
        probas /= probas.sum(axis=1, keepdims=True)
    if topp is not None:
        order = probas.argsort(axis=1)[:, ::-1]
        probas = np.take_along_axis(probas, order, axis=1)
        cumsum = np.cumsum(probas, axis=1)
        # Keep the smallest prefix whose mass reaches topp (shift by one).
        cut = np.roll(cumsum >= topp, 1, axis=1)
        cut[:, 0] = False
        probas[cut] = 0
        probas /= probas.sum(axis=1, keepdims=True)
        ids = order if ids is None else np.take_along_axis(ids, order, 1)
    return probas, ids


def draw(probas, ids, choice):
    """One token per row; `choice` is `np.random.choice` or a Generator's."""
    picked = np.apply_along_axis(lambda p: choice(len(p), p=p), 1, probas)
    picked = picked.reshape((-1, 1))
    if ids is not None:
        picked = np.take_along_axis(ids, picked, axis=1)
    return picked


class AutoRegressiveDecoder:
    """bert4keras 0.11's decoding base class, same names and behaviour.

    Subclass it and write `predict(self, inputs, output_ids, states)` under
    `@AutoRegressiveDecoder.wraps(default_rtype=..., use_states=...)`; it
    returns, for every row of `output_ids`, the next token's probabilities
    (or logits), and new states when `use_states`.

    `repetition` (a `Repetition`, None by default as in bert4keras) applies
    n-gram blocking / a repetition penalty to beam search.
    """

    repetition = None

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
        inputs = [np.array([i]) for i in inputs]
        beams = BeamState(
            self.first_output_ids,
            topk,
            self.end_id,
            self.minlen,
            min_ends,
            self.repetition,
        )
        for _ in range(self.maxlen):
            scores, states = self.predict(
                inputs, beams.output_ids, states, temperature, "logits"
            )
            beams.advance(scores)
            if beams.done:
                return beams
            # Every row of `inputs` is the same source: one per live beam.
            inputs = [np.repeat(i[:1], len(beams), axis=0) for i in inputs]
        beams.finish()
        return beams

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
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(
                inputs, output_ids, states, temperature, "probas"
            )
            probas /= probas.sum(axis=1, keepdims=True)
            if step == 0:
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            probas, ids = filter_probas(probas, topk, topp)
            sample_ids = draw(probas, ids, np.random.choice)
            output_ids = np.concatenate([output_ids, sample_ids], 1)
            if output_ids.shape[1] < self.minlen:
                continue
            ended = (output_ids == self.end_id).sum(1) == min_ends
            if ended.any():
                results.extend(output_ids[ended])
                inputs = [i[~ended] for i in inputs]
                output_ids = output_ids[~ended]
                if len(output_ids) == 0:
                    break
        results.extend(output_ids)
        return results


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
        return self.position_model(self.model).predict_on_batch(
            [
                np.pad(token_ids, padding).astype("int32"),
                np.pad(segment_ids, padding).astype("int32"),
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


class CachedUniLM:
    """A UniLM network split for decoding with a key/value cache.

    `encode` runs the sources once and keeps every layer's keys and values,
    `step` feeds one output token per row (segment 1, at its true position)
    against them. Both mirror `BertNetwork.block` at inference (no dropout);
    the parity test with full recompute guards the mirror.

    Rows are sources x beams, beam-major within a source; a source's beams
    share its source cache. Caches are keras-hub's one tensor per kind, but
    heads before length, (sources, layers, 2, heads, source_len, head_size)
    and (rows, layers, 2, heads, maxlen, head_size), so that each step's dot
    products read them without a transposed copy (a third of a step's time
    on CPU otherwise).
    """

    def __init__(self, network):
        self.network = network
        self.layers = network.config.num_hidden_layers

    def attention(self, index):
        return self.network[f"Transformer-{index}-MultiHeadSelfAttention"]

    def encode(self, token_ids, lengths, k=None):
        """Source cache, source key bias, next-token head of the last token."""
        net = self.network
        segment_ids = ops.zeros_like(token_ids)
        x = net.embed(token_ids, segment_ids)
        bias = net["Attention-Bias"]([token_ids, segment_ids])
        cache = []
        for index in range(self.layers):
            attention = self.attention(index)
            q, k_, v = attention.project(x)
            y = attention.attend(q, k_, v, bias)
            x = self.finish_block(index, x, y)
            cache.append(ops.transpose(ops.stack([k_, v], 1), (0, 1, 3, 2, 4)))
        batch, length = token_ids.shape
        flat = ops.reshape(x, (batch * length, -1))
        last = ops.take(flat, ops.arange(batch) * length + lengths - 1, axis=0)
        key_bias = ops.where(ops.not_equal(token_ids, 0), 0.0, MASK_BIAS)
        return (
            ops.stack(cache, axis=1),
            ops.cast(key_bias, "float32"),
            self.head(last, k),
        )

    def step(
        self,
        source_cache,
        key_bias,
        cache,
        rows,
        tokens,
        positions,
        index,
        k=None,
    ):
        """Reorder the output cache by `rows`, feed `tokens` at `index`."""
        cache = ops.take(cache, rows, axis=0)
        x = self.embed_output(tokens, positions + index)
        new = []
        for layer in range(self.layers):
            x, kv = self.cached_block(
                layer,
                x,
                source_cache[:, layer],
                key_bias,
                cache[:, layer],
                index,
            )
            new.append(kv)
        slots = ops.arange(cache.shape[4])
        here = ops.equal(slots, index)[None, None, None, None, :, None]
        new = ops.stack(new, axis=1)[:, :, :, :, None]
        return ops.where(here, new, cache), self.head(x[:, 0], k)

    def embed_output(self, tokens, positions):
        """`BertNetwork.embed` for one segment-1 token per row."""
        net = self.network
        tokens = tokens[:, None]
        x = net["Embedding-Token"](tokens)
        x = x + net["Embedding-Segment"](ops.ones_like(tokens))
        table = net["Embedding-Position"]
        embeddings = ops.cast(table.embeddings, table.compute_dtype)
        x = x + ops.take(embeddings, positions, axis=0)[:, None]
        return net["Embedding-Norm"](x)

    def cached_block(self, layer, x, source_kv, key_bias, past_kv, index):
        """One block for one token per row; also its key and value."""
        attention = self.attention(layer)
        q, k, v = attention.project(x)
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
        y = self.attend_cached(
            attention, q, k, v, source_kv, key_bias, past_kv, index
        )
        return self.finish_block(layer, x, y), ops.stack([k, v], axis=1)

    def attend_cached(
        self, attention, q, k, v, source_kv, key_bias, past_kv, index
    ):
        """`MultiHeadAttention.attend` for one query per row.

        Keys come in three parts: the row's source (padding hidden), its
        earlier outputs (slots before `index`) and the token itself.
        Scaling, bias and softmax follow `attend`. Works in (source, head,
        beam, key) order, the order of the source cache.
        """
        rows, heads, size = q.shape
        sources, source_len = key_bias.shape
        beams = rows // sources
        slots = past_kv.shape[3]

        def by_source(x):  # (rows, heads, ...) -> (sources, heads, beams, ...)
            x = ops.reshape(x, (sources, beams) + tuple(x.shape[1:]))
            return ops.swapaxes(x, 1, 2)

        scores = ops.concatenate(
            [
                ops.einsum("bhkd,bhpd->bhkp", by_source(q), source_kv[:, 0]),
                by_source(ops.einsum("rhd,rhtd->rht", q, past_kv[:, 0])),
                by_source(ops.sum(q * k, axis=-1)[..., None]),
            ],
            axis=-1,
        )
        scores = ops.cast(scores, "float32") / math.sqrt(attention.head_size)
        past_bias = ops.where(ops.arange(slots) < index, 0.0, MASK_BIAS)
        bias = ops.concatenate(
            [
                key_bias,
                ops.broadcast_to(
                    ops.cast(past_bias, "float32"), (sources, slots)
                ),
                ops.zeros((sources, 1), "float32"),
            ],
            axis=-1,
        )
        probs = ops.softmax(scores + bias[:, None, None, :], axis=-1)
        probs = ops.cast(probs, attention.compute_dtype)
        past_v = ops.reshape(
            past_kv[:, 1], (sources, beams, heads, slots, size)
        )
        mixed = (
            ops.einsum(
                "bhkp,bhpd->bhkd", probs[..., :source_len], source_kv[:, 1]
            )
            + ops.einsum(
                "bhkt,bkhtd->bhkd",
                probs[..., source_len : source_len + slots],
                past_v,
            )
            + probs[..., -1:] * by_source(v)
        )
        mixed = ops.reshape(ops.swapaxes(mixed, 1, 2), (rows, 1, heads * size))
        return attention.o_dense(mixed)

    def finish_block(self, index, x, y):
        """The rest of `BertNetwork.block` after the attention output."""
        net = self.network
        name = f"Transformer-{index}-MultiHeadSelfAttention"
        x = net[f"{name}-Norm"](x + y)
        name = f"Transformer-{index}-FeedForward"
        return net[f"{name}-Norm"](x + net[name](x))

    def head(self, hidden, k):
        """Probabilities (k None) or the top k of `log(p + 1e-12)`."""
        logits = self.network.mlm_logits(hidden[:, None])
        probas = self.network["MLM-Activation"](logits)[:, 0]
        if k is None:
            return probas
        return ops.top_k(ops.log(probas + LOG_EPSILON), k)


class Seq2SeqDecoder:
    """Titles from a UniLM model: many sources, cached, batched, compiled.

    Sources are `token_ids` of `tokenizer.encode(text)[0]` (segment 0);
    outputs are segment 1 and include `end_id` when they ended, as in
    bert4keras. Sources are sorted by length, packed `batch_size` at a time
    (the last batch filled with copies), padded to a multiple of `bucket`,
    with one row per (source, beam); so a compiled step serves every step
    and every batch of a bucket. Rows never mix, so a source's title does
    not depend on its batch (USER-NEEDS 13).

    `reference=True` decodes one source at a time with `RecomputeDecoder`
    (bert4keras's AutoTitle), for checking and timing.

    `no_repeat_ngram_size` and `repetition_penalty` (see `Repetition`)
    apply to beam search and greedy decoding on both paths, not to sampling.
    """

    def __init__(
        self,
        model,
        end_id,
        maxlen,
        minlen=1,
        reference=False,
        batch_size=32,
        bucket=32,
        jit_compile=True,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
    ):
        network = getattr(model, "bert_network", None)
        if network is None or network.application != "unilm":
            raise ValueError(
                "Seq2SeqDecoder needs a model from "
                "build_transformer_model(..., application='unilm')"
            )
        self.model, self.network = model, network
        self.end_id, self.maxlen, self.minlen = end_id, maxlen, minlen
        self.reference = reference
        self.batch_size, self.bucket = batch_size, bucket
        self.jit_compile = jit_compile
        self.cached = CachedUniLM(network)
        self.recompute = RecomputeDecoder(model, end_id, maxlen, minlen)
        self.repetition = self.recompute.repetition = Repetition(
            no_repeat_ngram_size, repetition_penalty
        )
        self.trace_counts = collections.Counter()
        self._functions = {}

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
        self.check_sources(sources)
        if self.reference:
            states = [
                self.recompute.run_beam_search([ids, [0] * len(ids)], topk)
                for ids in self.progress(sources, progress)
            ]
        else:
            states = self.over_batches(
                sources,
                lambda batch, size: self.beam_batch(batch, topk, size),
                progress,
                batch_size,
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
        self.check_sources(sources)
        if self.reference:
            if seed is not None:
                np.random.seed(seed)
            samples = [
                self.recompute.random_sample(
                    [ids, [0] * len(ids)], n, topk, topp
                )
                for ids in self.progress(sources, progress)
            ]
        else:
            rng = np.random.default_rng(seed)
            samples = self.over_batches(
                sources,
                lambda batch, size: self.sample_rows(
                    batch, n, topk, topp, rng, size
                ),
                progress,
                batch_size,
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

    # Batching ---------------------------------------------------------------

    @property
    def max_positions(self):
        return self.network.config.max_position_embeddings

    def check_sources(self, sources):
        for number, ids in enumerate(sources):
            if len(ids) == 0:
                raise ValueError(f"source {number} is empty")
            if len(ids) + self.maxlen > self.max_positions:
                raise ValueError(
                    f"source {number} has {len(ids)} tokens; with maxlen "
                    f"{self.maxlen} it exceeds max_position_embeddings "
                    f"{self.max_positions}. Truncate it, e.g. "
                    f"tokenizer.encode(text, maxlen="
                    f"{self.max_positions - self.maxlen})"
                )

    def progress(self, items, enabled, unit="source"):
        """A tqdm bar over `items` when enabled (sources or batches)."""
        if not enabled:
            return items
        from tqdm import tqdm

        return tqdm(items, desc="decoding", unit=unit)

    def over_batches(self, sources, decode, progress, size=None):
        """Decode length-sorted batches, return results in input order."""
        size = size or self.batch_size
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        starts = range(0, len(order), size)
        results = [None] * len(sources)
        for start in self.progress(starts, progress, unit="batch"):
            chosen = order[start : start + size]
            batch = [sources[i] for i in chosen]
            for i, result in zip(chosen, decode(batch, size)):
                results[i] = result
        return results

    def pack(self, batch, size):
        """Token ids (size, bucketed length) and lengths; filled with copies
        of the first source so that every batch has the same shape."""
        batch = list(batch) + [batch[0]] * (size - len(batch))
        lengths = np.array([len(ids) for ids in batch], dtype="int32")
        length = -(-int(lengths.max()) // self.bucket) * self.bucket
        length = min(length, self.max_positions)
        token_ids = np.zeros((len(batch), length), dtype="int32")
        for row, ids in enumerate(batch):
            token_ids[row, : len(ids)] = ids
        return token_ids, lengths

    def function(self, name, k):
        """The compiled `CachedUniLM.encode` / `step`, counting traces."""
        if (name, k) not in self._functions:
            method = getattr(self.cached, name)

            def traced(*args):
                self.trace_counts[name] += 1
                return method(*args, k=k)

            self._functions[name, k] = compile_function(
                traced, self.model.variables, self.jit_compile
            )
        return self._functions[name, k]

    def empty_cache(self, rows):
        attention = self.cached.attention(0)
        shape = (
            rows,
            self.cached.layers,
            2,
            attention.heads,
            self.maxlen,
            attention.head_size,
        )
        return ops.zeros(shape, dtype=attention.compute_dtype)

    # Fast beam search -------------------------------------------------------

    def beam_batch(self, batch, topk, size):
        """Beam search for up to `size` sources at once.

        Each row brings its best `topk` candidates, or `topk + maxlen` with
        repetition options: they change the scores of at most maxlen tokens
        a row, so the best `topk` after them are among those.
        """
        token_ids, lengths = self.pack(batch, size)
        k = min(
            topk + self.maxlen * self.repetition.active,
            self.network.config.vocab_size,
        )
        source_cache, key_bias, (logp, ids) = self.function("encode", k)(
            token_ids, lengths
        )
        logp, ids = self.as_beams(logp, ids, 1, k)
        states = [
            BeamState(
                np.empty((1, 0), dtype=int),
                topk,
                self.end_id,
                self.minlen,
                repetition=self.repetition,
            )
            for _ in batch
        ]
        cache = self.empty_cache(len(token_ids) * topk)
        positions = np.repeat(lengths, topk)
        step = self.function("step", k)
        for index in range(self.maxlen):
            rows, tokens = self.advance(states, logp, ids, topk)
            if rows is None or index == self.maxlen - 1:
                break
            cache, (logp, ids) = step(
                source_cache,
                key_bias,
                cache,
                rows,
                tokens,
                positions,
                np.int32(index),
            )
            logp, ids = self.as_beams(logp, ids, topk, k)
        for state in states:
            if not state.done:
                state.finish()
        return states

    def as_beams(self, logp, ids, beams, k):
        """Device top-k to NumPy, shaped (sources, beams, k)."""
        logp = ops.convert_to_numpy(logp).reshape((-1, beams, k))
        ids = ops.convert_to_numpy(ids).reshape((-1, beams, k))
        return logp, ids

    def advance(self, states, logp, ids, topk):
        """One host step of every source's beams; the device rows to keep.

        Row r = source * topk + beam. Returns (parent row of each new row,
        its last token), or (None, None) when every source is done. Rows of
        finished sources and unused beams copy their source's first row and
        feed token 0; their outputs are ignored.
        """
        rows = np.repeat(np.arange(len(logp), dtype="int32") * topk, topk)
        tokens = np.zeros(len(rows), dtype="int32")
        live = False
        for source, state in enumerate(states):
            if state.done:
                continue
            n = len(state)
            state.advance(logp[source, :n], ids[source, :n])
            if state.done:
                continue
            live = True
            start = source * topk
            rows[start : start + len(state)] = start + state.parents
            tokens[start : start + len(state)] = state.output_ids[:, -1]
        return (rows, tokens) if live else (None, None)

    # Fast sampling ----------------------------------------------------------

    def sample_rows(self, batch, n, topk, topp, rng, size):
        """bert4keras's `random_sample` for a batch: n rows per source."""
        token_ids, lengths = self.pack(batch, size)
        source_cache, key_bias, probas = self.function("encode", None)(
            token_ids, lengths
        )
        rows = len(token_ids) * n
        real = len(batch) * n
        probas = np.repeat(ops.convert_to_numpy(probas), n, axis=0)[:real]
        output_ids = np.zeros((real, 0), dtype=int)
        alive = np.ones(real, dtype=bool)
        results = [[] for _ in batch]
        cache = self.empty_cache(rows)
        positions = np.repeat(lengths, n)
        tokens = np.zeros(rows, dtype="int32")
        step = self.function("step", None)
        for index in range(self.maxlen):
            probas /= probas.sum(axis=1, keepdims=True)
            picked = np.zeros((real, 1), dtype=int)
            filtered, ids = filter_probas(probas[alive], topk, topp)
            picked[alive] = draw(filtered, ids, rng.choice)
            output_ids = np.concatenate([output_ids, picked], 1)
            if output_ids.shape[1] >= self.minlen:
                ended = alive & ((output_ids == self.end_id).sum(1) == 1)
                for row in np.flatnonzero(ended):
                    results[row // n].append(output_ids[row])
                alive &= ~ended
            if not alive.any() or index == self.maxlen - 1:
                break
            tokens[:real] = picked[:, 0]
            cache, probas = step(
                source_cache,
                key_bias,
                cache,
                np.arange(rows, dtype="int32"),
                tokens,
                positions,
                np.int32(index),
            )
            probas = ops.convert_to_numpy(probas)[:real]
        for row in np.flatnonzero(alive):
            results[row // n].append(output_ids[row])
        return results
