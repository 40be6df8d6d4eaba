"""The search rules on the host: beams, samples and their device layouts.

The decoders' own tests (`test_decoding.py`) check them end to end against
brute force and the recompute reference; these pin the rules one step at a
time, with hand-written distributions.
"""

import numpy as np
import pytest

from models.search import BeamSearch
from models.search import BeamState
from models.search import Repetition
from models.search import SampleState
from models.search import Sampling
from models.search import filter_probas

END = 9


def test_beam_state_with_candidate_ids():
    """The fast path hands each row's best few as (logp, ids)."""
    state = BeamState(np.empty((1, 0), dtype=int), 2, end_id=END)
    state.advance(np.log([[0.5, 0.3]]), np.array([[7, 5]]))
    assert sorted(state.output_ids.tolist()) == [[5], [7]]
    assert sorted(state.scores) == pytest.approx(sorted(np.log([0.5, 0.3])))


def test_beam_state_ended_beam_leaves_and_topk_shrinks():
    state = BeamState(np.empty((1, 0), dtype=int), 3, end_id=2)
    state.advance(np.log([[0.5, 0.3, 0.2]]))
    # Best beam [0] is live; [2] ended and leaves; two beams remain.
    assert not state.done and state.topk == 2 and len(state) == 2
    assert [ids.tolist() for ids, _ in state.finished] == [[2]]
    after = {0: [0.1, 0.1, 0.8], 1: [0.4, 0.4, 0.2]}
    state.advance(np.log([after[ids[-1]] for ids in state.output_ids]))
    assert state.done and state.result.tolist() == [0, 2]
    assert [ids for ids, _ in state.nbest()] == [[0, 2], [2]]


def test_repetition_bans_a_repeated_bigram():
    assert Repetition(no_repeat_ngram_size=2).banned([4, 5, 4]) == {5}
    assert Repetition(no_repeat_ngram_size=2).banned([4, 5]) == set()
    logp = Repetition(penalty=2.0).apply([[3]], np.log([[0.5, 0.5, 0.5, 0.5]]))
    assert logp[0, 3] == pytest.approx(2 * np.log(0.5))
    assert logp[0, 0] == pytest.approx(np.log(0.5))


def one_hot(rows, token, width=10):
    probas = np.full((rows, width), 1e-9)
    probas[:, token] = 1.0
    return probas


def test_sample_state_splits_each_source_on_the_first_draw():
    state = SampleState(np.zeros((2, 0), dtype=int), 3, END)
    assert state.live_output_ids.shape == (2, 0)  # one row per source
    state.advance(np.stack([one_hot(1, 4)[0], one_hot(1, 5)[0]]))
    assert state.output_ids[:, -1].tolist() == [4, 4, 4, 5, 5, 5]
    assert state.alive.all() and not state.done


def test_sample_state_stop_rule():
    """A row leaves once it has `minlen` tokens, ends with the end token
    and holds `min_ends` of them; the rows left at maxlen are results too,
    after the ended ones."""
    state = SampleState(np.zeros((1, 0), dtype=int), 2, END, minlen=2)
    state.advance(one_hot(1, END))  # both rows end at once, before minlen
    assert state.alive.all()
    state.advance(np.stack([one_hot(1, 3)[0], one_hot(1, END)[0]]))
    assert state.alive.tolist() == [True, False]  # [END, 3] has not ended
    state.advance(one_hot(1, END))
    assert state.done
    results = [ids.tolist() for ids in state.finish()[0]]
    assert results == [[END, END], [END, 3, END]]

    state = SampleState(np.zeros((1, 0), dtype=int), 2, END, min_ends=2)
    state.advance(one_hot(1, END))
    assert state.alive.all()  # one end of the two it takes
    state.advance(np.stack([one_hot(1, END)[0], one_hot(1, 1)[0]]))
    assert state.alive.tolist() == [False, True]
    state.advance(one_hot(1, 6))  # only the live row is drawn for
    results = state.finish()[0]
    assert [ids.tolist() for ids in results] == [[END, END], [END, 1, 6]]


def test_sample_state_draws_within_top_k_and_top_p():
    probas = np.array([[0.5, 0.2, 0.15, 0.1, 0.05]])
    kept, ids = filter_probas(probas.copy(), topk=3, topp=0.6)
    assert sorted(ids[0][kept[0] > 0].tolist()) == [0, 1]
    rng = np.random.default_rng(0)
    state = SampleState(
        np.zeros((1, 0), dtype=int),
        50,
        END,
        topk=3,
        topp=0.6,
        choice=rng.choice,
    )
    state.advance(probas)
    assert set(state.output_ids[:, 0].tolist()) == {0, 1}


def test_beam_search_feeds_each_source_its_own_rows():
    """Device rows: source-major, `topk` per source, fillers last. A
    finished source's rows copy its first row and read token 0."""
    search = BeamSearch(2, 3, topk=2, candidates=2, end_id=END)
    logp = np.log(np.full((3, 1, 2), 0.5))
    ids = np.array([[[4, 5]], [[END, 6]], [[7, 8]]])
    logp[1, 0] = np.log([0.9, 0.1])  # source 1's best beam ends: done
    search.advance((logp, ids))
    assert not search.states[0].done and search.states[1].done
    rows, tokens = search.feed()
    assert rows.tolist() == [0, 0, 2, 2, 4, 4]
    assert sorted(tokens[:2].tolist()) == [4, 5]
    assert tokens[2:].tolist() == [0, 0, 0, 0]
    states = search.finish()
    assert states[1].result.tolist() == [END]
    assert len(states[0].result) == 1


def test_sampling_reads_only_live_rows():
    """Rows that left (and fillers) may hold anything: they are not read."""
    search = Sampling(1, 2, 2, END, 1, None, None, np.random.default_rng(0))
    search.advance(np.stack([one_hot(1, END)[0], np.full(10, np.nan)]))
    assert search.done
    search = Sampling(1, 2, 2, END, 1, None, None, np.random.default_rng(0))
    search.advance(np.stack([one_hot(1, 4)[0], np.full(10, np.nan)]))
    rows, tokens = search.feed()
    assert rows.tolist() == [0, 1, 2, 3] and tokens.tolist() == [4, 4, 0, 0]
    probas = np.stack([one_hot(1, END)[0], one_hot(1, 3)[0]])
    search.advance(np.concatenate([probas, np.full((2, 10), np.nan)]))
    assert search.state.alive.tolist() == [False, True]
    assert [ids.tolist() for ids in search.finish()[0]] == [[4, END], [4, 3]]
