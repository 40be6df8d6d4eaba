"""Decoding and scoring: collapsed titles are warned of every time, for
the validation and the test set, and recorded."""

import argparse

import pytest

from tasks.lib.evaluation import evaluate
from tasks.lib.evaluation import score_test


class SameTitle:
    """A decoder that says '标题' to everything, as a collapsed model."""

    def beam_search_batch(self, sources, beam, progress, batch_size):
        return [[0]] * len(sources)


class Characters:
    def encode(self, text, maxlen):
        return [ord(c) for c in text[:maxlen]], None

    def decode(self, ids):
        return "标题"


ARGS = argparse.Namespace(
    maxlen=64, title_maxlen=8, progress=False, eval_batch_size=4, beams=[1, 3]
)
PAIRS = [(f"标题{i}", f"内容{i}") for i in range(6)]


def test_collapsed_titles_are_warned_of_each_time_and_recorded(tmp_path):
    for _ in range(2):  # Python would show one place's warning once
        with pytest.warns(UserWarning, match="valid predictions collapsed"):
            metrics, _ = evaluate(SameTitle(), Characters(), PAIRS, 1, ARGS)
        assert metrics["collapsed"] is True
    with pytest.warns(UserWarning) as caught:
        results = score_test(SameTitle(), Characters(), PAIRS, ARGS, tmp_path)
    warned = [w for w in caught if w.category is UserWarning]
    assert [str(w.message).split(" collapsed")[0] for w in warned] == [
        "test beam 1 predictions",
        "test beam 3 predictions",
    ]
    assert all(results[beam]["collapsed"] is True for beam in ("1", "3"))
