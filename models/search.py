"""How tokens are chosen: bert4keras's beam and sampling rules, on the host.

Every decoder in `models/decoding.py` picks, stops and drops with the
classes here; only where its next-token distributions come from differs
(a `predict` method, or the network's key/value cache on a device), so the
decoders cannot drift apart in the bookkeeping.

- `BeamState`: the live beams of one source. A beam's score is its summed
  `log(p + 1e-12)`; each step keeps the `topk` best extensions; once
  `minlen` tokens are out, if the best beam has ended (its last token is
  the end token, and it holds `min_ends` of them) it is the answer,
  otherwise ended beams leave and `topk` shrinks to the beams left; at
  `maxlen` the best-scoring beam is returned. `nbest` lists the other
  complete hypotheses with their scores. `Repetition` adds n-gram blocking
  and a repetition penalty to that rule. With a `length_penalty` α, every
  ended beam leaves (the best one too) and the answer is the complete
  hypothesis with the best GNMT score (`length_normalised`).
- `SampleState`: n sampled rows per source. Each step draws one token per
  live row from the top-k / top-p filtered distribution; once `minlen`
  tokens are out, a row that has ended (as a beam does) is a result and
  leaves; at `maxlen` the rows left are results too.
- `BeamSearch` and `Sampling` run those rules for a batch of sources whose
  rows live on a device (`Seq2SeqDecoder`): they read each step's outputs
  and say which row each next row extends and which token it feeds.

Plain NumPy: nothing here knows about Keras or a backend.
"""

import dataclasses

import numpy as np

# bert4keras adds this before taking logs, so that p = 0 stays finite.
LOG_EPSILON = 1e-12


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


def _ended(output_ids, end_id, min_ends):
    """bert4keras's stop rule, for beams and samples alike: a row has ended
    when its last token is the end token and it holds at least `min_ends`
    of them (an end token drawn before `minlen` does not end a row alone)."""
    end_counts = (output_ids == end_id).sum(1)
    return (output_ids[:, -1] == end_id) & (end_counts >= min_ends)


def length_normalised(score, length, alpha):
    """GNMT's (Wu et al., 2016) length-normalised score of a hypothesis of
    `length` tokens: score / lp, lp = ((5 + length) / 6)^α."""
    return score / ((5.0 + length) / 6.0) ** alpha


class BeamState:
    """The live beams of one source under bert4keras's stop rule.

    `length_penalty` None (the default) is bert4keras's rule exactly: the
    search returns as soon as the best live beam has ended. With α (a
    number, 0 included) it follows GNMT instead: once `minlen` tokens are
    out, every ended beam leaves, the best one too, and `topk` shrinks to
    the beams left; the search ends when none is left or at `maxlen` (the
    live beams then count as complete); the answer is the complete
    hypothesis of best `length_normalised` score, |y| counting the end
    token. Beams are still ranked by their summed log-probabilities within
    a step: there they all have one length. The scores of `nbest` and
    `result_score` are then the normalised ones. α > 0 favours longer
    titles, α < 0 shorter ones; α = 0 compares complete hypotheses by
    their plain scores.
    """

    def __init__(
        self,
        first_ids,
        topk,
        end_id,
        minlen=1,
        min_ends=1,
        repetition=None,
        length_penalty=None,
    ):
        self.repetition = repetition
        self.length_penalty = length_penalty
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

    @property
    def live_output_ids(self):
        """Every beam is live: ended ones leave at once."""
        return self.output_ids

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
        ended = _ended(self.output_ids, self.end_id, self.min_ends)
        if self.length_penalty is not None:
            return self._retire(ended)
        best = self.scores.argmax()
        keep = ~ended
        for row in np.flatnonzero(ended):
            if row != best:
                self.finished.append((self.output_ids[row], self.scores[row]))
        if ended[best]:
            return self._stop(best)
        if keep.all():
            return
        self._keep(keep)

    def _stop(self, row):
        self.result = self.output_ids[row]
        self.result_score = self.scores[row]

    def _keep(self, rows):
        self.output_ids = self.output_ids[rows]
        self.scores = self.scores[rows]
        self.parents = self.parents[rows]
        self.topk = len(self.output_ids)

    def _retire(self, rows):
        """GNMT's rule: `rows` (a mask) leave as complete hypotheses with
        their normalised scores; with no live beam left, the best wins."""
        length = self.output_ids.shape[1]
        for row in np.flatnonzero(rows):
            normalised = length_normalised(
                self.scores[row], length, self.length_penalty
            )
            self.finished.append((self.output_ids[row], normalised))
        if rows.any():
            self._keep(~rows)
        if len(self) == 0:
            best = max(range(len(self.finished)), key=self._finished_score)
            self.result, self.result_score = self.finished.pop(best)

    def _finished_score(self, index):
        return self.finished[index][1]

    def finish(self):
        """At `maxlen`: the best beam, ended or not; the others complete."""
        if self.length_penalty is not None:
            return self._retire(np.ones(len(self), dtype=bool))
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


class SampleState:
    """n sampled rows per source under bert4keras's stop rule.

    Before the first token a source has one row (its n samples share that
    prefix, so it is predicted once, as bert4keras does); the first
    `advance` splits it into n. Rows are source-major: row r belongs to
    source r // n. A row that ends is recorded in `results[source]` and
    stops being live; `finish` adds the rows still live at `maxlen`.

    `choice` draws one index from probabilities: `np.random.choice` (the
    global generator, as bert4keras) or a `np.random.Generator`'s.
    """

    def __init__(
        self,
        first_ids,
        n,
        end_id,
        minlen=1,
        min_ends=1,
        topk=None,
        topp=None,
        choice=np.random.choice,
    ):
        self.output_ids = np.asarray(first_ids, dtype=int)
        self.alive = np.ones(len(self.output_ids), dtype=bool)
        self.results = [[] for _ in self.output_ids]
        self.n, self.end_id = n, end_id
        self.minlen, self.min_ends = minlen, min_ends
        self.topk, self.topp, self.choice = topk, topp, choice
        self.split = False

    @property
    def done(self):
        return not self.alive.any()

    @property
    def live_output_ids(self):
        return self.output_ids[self.alive]

    def advance(self, probas):
        """Draw a token for every live row from `probas` (one row each,
        in order, normalised here in place) and apply the stop rule."""
        if not self.split:
            probas = np.repeat(probas, self.n, axis=0)
            self.output_ids = np.repeat(self.output_ids, self.n, axis=0)
            self.alive = np.repeat(self.alive, self.n)
            self.split = True
        probas /= probas.sum(axis=1, keepdims=True)
        filtered, ids = filter_probas(probas, self.topk, self.topp)
        picked = np.zeros((len(self.alive), 1), dtype=int)
        picked[self.alive] = draw(filtered, ids, self.choice)
        self.output_ids = np.concatenate([self.output_ids, picked], 1)
        if self.output_ids.shape[1] < self.minlen:
            return
        ended = self.alive & _ended(self.output_ids, self.end_id, self.min_ends)
        for row in np.flatnonzero(ended):
            self.results[row // self.n].append(self.output_ids[row])
        self.alive &= ~ended

    def finish(self):
        """At `maxlen`: every row still live is a result too."""
        for row in np.flatnonzero(self.alive):
            self.results[row // self.n].append(self.output_ids[row])
        self.alive[:] = False
        return self.results


class BeamSearch:
    """Beam search for a batch of sources whose rows live on a device.

    The device holds `width = topk` rows per source, source-major (row
    `source * topk + beam`), for `padded` sources: the real ones, then
    fillers that complete a compiled batch. Each step it returns every
    row's best `candidates` log-probabilities and their token ids;
    `advance` runs each source's `BeamState` on them, and `feed` says
    which row each new row extends and the token it reads. Rows of
    finished sources and unused beams copy their source's first row and
    feed token 0; their outputs are ignored.

    `candidates` is at least `topk`, and must be `topk + maxlen` with
    repetition options: these change the scores of at most maxlen tokens
    a row, so the best `topk` after them are among those.
    """

    def __init__(
        self,
        sources,
        padded,
        topk,
        candidates,
        end_id,
        minlen=1,
        repetition=None,
        length_penalty=None,
    ):
        self.width, self.candidates, self.padded = topk, candidates, padded
        self.states = [
            BeamState(
                np.empty((1, 0), dtype=int),
                topk,
                end_id,
                minlen,
                repetition=repetition,
                length_penalty=length_penalty,
            )
            for _ in range(sources)
        ]

    @property
    def done(self):
        return all(state.done for state in self.states)

    def advance(self, outputs):
        """One step of every live source, from the device's top-k."""
        logp, ids = (
            np.reshape(x, (self.padded, -1, self.candidates)) for x in outputs
        )
        for source, state in enumerate(self.states):
            if not state.done:
                n = len(state)
                state.advance(logp[source, :n], ids[source, :n])

    def feed(self):
        """(parent row of each new row, its last token) for the device."""
        width = self.width
        starts = np.arange(self.padded, dtype="int32") * width
        rows = np.repeat(starts, width)
        tokens = np.zeros(len(rows), dtype="int32")
        for start, state in zip(starts, self.states):
            if not state.done:
                rows[start : start + len(state)] = start + state.parents
                tokens[start : start + len(state)] = state.output_ids[:, -1]
        return rows, tokens

    def finish(self):
        """At `maxlen`: every source's answer; returns the `BeamState`s."""
        for state in self.states:
            if not state.done:
                state.finish()
        return self.states


class Sampling:
    """`SampleState` for a batch of sources whose rows live on a device.

    The device holds `width = n` rows per source (row r is `SampleState`
    row r) for `padded` sources, fillers last, and returns every row's
    next-token probabilities; the first step returns one row per source.
    Each row feeds itself its last token; rows that left, and fillers,
    feed token 0 and are ignored.
    """

    candidates = None  # whole distributions, not a top-k

    def __init__(self, sources, padded, n, end_id, minlen, topk, topp, rng):
        self.width, self.padded, self.real = n, padded, sources * n
        self.state = SampleState(
            np.zeros((sources, 0), dtype=int),
            n,
            end_id,
            minlen,
            topk=topk,
            topp=topp,
            choice=rng.choice,
        )

    @property
    def done(self):
        return self.state.done

    def advance(self, probas):
        rows = len(self.state.output_ids)
        self.state.advance(probas[:rows][self.state.alive])

    def feed(self):
        rows = self.padded * self.width
        tokens = np.zeros(rows, dtype="int32")
        tokens[: self.real] = self.state.output_ids[:, -1]
        return np.arange(rows, dtype="int32"), tokens

    def finish(self):
        return self.state.finish()
