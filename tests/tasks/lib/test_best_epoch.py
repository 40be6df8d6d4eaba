"""The best epoch of a run: validation BLEU, except that collapsed titles
never replace varied ones."""

from tasks.lib.experiment import better_epoch


def epoch(bleu, collapsed):
    return {"bleu": bleu, "collapsed": collapsed}


def test_higher_bleu_wins_among_alike_epochs():
    assert better_epoch(epoch(0.2, False), epoch(0.1, False))
    assert not better_epoch(epoch(0.1, False), epoch(0.2, False))
    assert better_epoch(epoch(0.2, True), epoch(0.1, True))
    assert better_epoch(epoch(0.0, True), None)


def test_collapsed_titles_never_replace_varied_ones_whatever_their_bleu():
    assert not better_epoch(epoch(0.9, True), epoch(0.01, False))
    assert better_epoch(epoch(0.001, False), epoch(0.9, True))


def test_a_best_recorded_before_the_collapse_mark_counts_as_varied():
    old = {"epoch": 2, "bleu": 0.1}  # a run resumed from an older state
    assert better_epoch(epoch(0.2, False), old)
    assert not better_epoch(epoch(0.5, True), old)
