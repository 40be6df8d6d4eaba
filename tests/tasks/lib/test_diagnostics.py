"""Exposure-bias diagnostics against hand-built models with known
probabilities, and the UniLM implementation against the model itself."""

import math

import numpy as np
import pytest

from tasks.lib import diagnostics
from tasks.lib import diagnostics_report
from tasks.lib import run_diagnostics
from tasks.lib.metrics import score_titles

PAD, END, A, B, C = range(5)
FORBIDDEN = (PAD, END)


class ToyModel:
    """A `DiagnosticModel` whose next-token distribution is a Python
    function of (source, prefix); log-probabilities and greedy titles are
    computed one position at a time, the plain way."""

    def __init__(self, next_probs, vocab_size=5, end_id=END, maxlen=8):
        self.next_probs = next_probs
        self.vocab_size, self.end_id, self.maxlen = vocab_size, end_id, maxlen
        self.calls = []

    def log_probs(self, sources, titles):
        self.calls.append(len(titles))
        horizon = max(len(title) for title in titles)
        out = np.full((len(titles), horizon, self.vocab_size), np.nan)
        for row, (source, title) in enumerate(zip(sources, titles)):
            for t in range(len(title)):
                with np.errstate(divide="ignore"):
                    out[row, t] = np.log(self.next_probs(source, title[:t]))
        return out

    def greedy(self, sources, progress=False):
        titles = []
        for source in sources:
            title = []
            while len(title) < self.maxlen:
                title.append(int(np.argmax(self.next_probs(source, title))))
                if title[-1] == self.end_id:
                    break
            titles.append(title)
        return titles


# A first-order model: the next token depends on the previous one only.
MARKOV = {
    None: [0, 0.1, 0.5, 0.3, 0.1],  # empty prefix: argmax A
    A: [0, 0.2, 0.15, 0.55, 0.1],  # after A: argmax B
    B: [0, 0.5, 0.15, 0.1, 0.25],  # after B: argmax END
    C: [0, 0.1, 0.6, 0.2, 0.1],  # after C: argmax A
    END: [0.2] * 5,
}


def markov(source, prefix):
    return np.array(MARKOV[prefix[-1] if prefix else None])


# Three references; greedy decoding gives A B END for every source.
TITLES = [[A, B, END], [A, C, A, END], [B, END]]
SOURCES = [[7], [8], [9]]


def p(previous, token):
    return MARKOV[previous][token]


def test_teacher_forced_figures_by_hand():
    clean = diagnostics.teacher_forced(
        ToyModel(markov), SOURCES, TITLES, FORBIDDEN, batch_size=2
    )
    np.testing.assert_allclose(clean.gold_logp[1], np.log([0.5, 0.1, 0.6, 0.2]))
    assert [list(c) for c in clean.correct] == [
        [True, True, True],
        [True, False, True, False],
        [False, True],
    ]
    # The likeliest token that is neither the reference nor forbidden.
    assert [list(w) for w in clean.best_wrong] == [
        [B, A, C],
        [B, B, B, B],
        [A, C],
    ]


def test_survival_curves_by_hand():
    model = ToyModel(markov)
    clean = diagnostics.teacher_forced(model, SOURCES, TITLES, FORBIDDEN)
    greedy = model.greedy(SOURCES)
    assert greedy == [[A, B, END]] * 3
    curves = diagnostics.survival(greedy, TITLES, clean.correct)
    assert curves["position"] == [1, 2, 3, 4]
    assert curves["titles"] == [3, 3, 2, 1]
    # t=1: titles 1 and 2 start with A; t=2: only title 1 goes on A B.
    np.testing.assert_allclose(curves["survival"], [2 / 3, 1 / 3, 1 / 2, 0])
    np.testing.assert_allclose(curves["accuracy"], [2 / 3, 2 / 3, 1, 0])
    np.testing.assert_allclose(curves["independent"], [2 / 3, 4 / 9, 4 / 9, 0])
    # A greedy title on the reference has read reference tokens only.
    assert curves["teacher_forced"] == curves["survival"]


def test_recovery_curves_by_hand():
    model = ToyModel(markov)
    clean = diagnostics.teacher_forced(model, SOURCES, TITLES, FORBIDDEN)
    curves = diagnostics.recovery(
        model, SOURCES, TITLES, clean, span=3, forbidden=FORBIDDEN
    )
    # Cases (title, k): (0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 0).
    assert curves["offset"] == [1, 2, 3]
    assert curves["cases"] == [6, 3, 1]
    clean_j1 = [p(A, B), p(B, END), p(A, C), p(C, A), p(A, END), p(B, END)]
    # Own wrong tokens B, A, B, B, B, A; the next token reads them.
    own_j1 = [p(B, B), p(A, END), p(B, C), p(B, A), p(B, END), p(A, END)]
    clean_j2 = [p(B, END), p(C, A), p(A, END)]
    assert curves["clean_ce"][0] == pytest.approx(-np.mean(np.log(clean_j1)))
    assert curves["own_ce"][0] == pytest.approx(-np.mean(np.log(own_j1)))
    # Two tokens on, a first-order model has forgotten the wrong one.
    for kind in ("own", "random"):
        assert curves[f"{kind}_ce"][1] == pytest.approx(
            -np.mean(np.log(clean_j2))
        )
        assert curves[f"{kind}_ce"][2] == pytest.approx(-math.log(p(A, END)))
    assert curves["clean_accuracy"] == pytest.approx([4 / 6, 2 / 3, 0])
    # After the wrong B at (1, 2) END is still the argmax.
    assert curves["own_accuracy"][0] == pytest.approx(1 / 6)


def test_random_tokens_by_hand_when_only_one_is_allowed():
    """With tokens A and B allowed, the only wrong token is the other one,
    so the random curve is known too."""

    def p4(previous, token):
        row = MARKOV[previous][:4]
        return row[token] / sum(row)

    def two_tokens(source, prefix):
        return np.array(
            [p4(prefix[-1] if prefix else None, t) for t in range(4)]
        )

    model = ToyModel(two_tokens, vocab_size=4)
    titles = [[A, B, END], [B, A, END]]
    clean = diagnostics.teacher_forced(model, [[1], [2]], titles, FORBIDDEN)
    curves = diagnostics.recovery(
        model, [[1], [2]], titles, clean, span=2, forbidden=FORBIDDEN
    )
    # Cases (0, 0): B B END; (0, 1): A A END; (1, 0): A A END; (1, 1): B B END.
    expected = -np.mean(np.log([p4(B, B), p4(A, END), p4(A, A), p4(B, END)]))
    assert curves["random_ce"][0] == pytest.approx(expected)
    assert curves["own_ce"][0] == pytest.approx(expected)


def test_random_wrong_tokens_are_uniform_and_never_gold_or_forbidden():
    titles = [[A, END]] * 3000
    allowed = np.array([A, B, C])
    tokens = diagnostics.wrong_tokens(
        "random",
        [(i, 0) for i in range(len(titles))],
        titles,
        None,
        allowed,
        np.random.default_rng(0),
    )
    counts = np.bincount(tokens, minlength=5)
    assert counts[[PAD, END, A]].sum() == 0
    assert abs(counts[B] - counts[C]) < 200


def test_a_model_that_ignores_its_prefix_has_a_flat_recovery_curve():
    def by_position(source, prefix):
        probs = np.full(5, 0.1)
        probs[A + (len(prefix) + source[0]) % 3] = 0.6
        return probs

    model = ToyModel(by_position)
    titles = [[A, B, C, A, B, END], [C, C, B, A, END]]
    curves = _recovery(model, titles)
    for kind in ("own", "random"):
        np.testing.assert_allclose(curves[f"{kind}_ce"], curves["clean_ce"])
        np.testing.assert_allclose(
            curves[f"{kind}_accuracy"], curves["clean_accuracy"]
        )


def test_a_model_that_copies_its_previous_token_has_a_steep_curve():
    def copy_previous(source, prefix):
        probs = np.full(5, 0.025)
        probs[prefix[-1] if prefix else A] = 0.9
        return probs

    model = ToyModel(copy_previous)
    titles = [[A] * 5 + [END], [B] * 4 + [END]]
    curves = _recovery(model, titles)
    for kind in ("own", "random"):
        increase = np.subtract(curves[f"{kind}_ce"], curves["clean_ce"])
        # The wrong token is copied once (-log 0.025 instead of -log 0.9),
        # then the next reference token is copied again.
        assert increase[0] == pytest.approx(
            math.log(0.9 / 0.025)
            * _cases_with_next(titles)
            / curves["cases"][0]
        )
        np.testing.assert_allclose(increase[1:], 0, atol=1e-12)
        assert curves[f"{kind}_accuracy"][0] < curves["clean_accuracy"][0]


def _cases_with_next(titles):
    """Cases whose next reference token is not END (END is never copied,
    so a wrong token costs nothing there)."""
    return sum(len(title) - 2 for title in titles)


def _recovery(model, titles):
    sources = [[i] for i in range(len(titles))]
    clean = diagnostics.teacher_forced(model, sources, titles, FORBIDDEN)
    return diagnostics.recovery(
        model, sources, titles, clean, span=3, forbidden=FORBIDDEN
    )


def test_titles_too_short_to_corrupt_give_empty_recovery_curves():
    model = ToyModel(markov)
    titles = [[END], [END]]
    clean = diagnostics.teacher_forced(model, [[1], [2]], titles, FORBIDDEN)
    curves = diagnostics.recovery(
        model, [[1], [2]], titles, clean, span=2, forbidden=FORBIDDEN
    )
    assert curves["cases"] == [0, 0]
    assert curves["own_ce"] == curves["clean_accuracy"] == [None, None]


def test_batching_and_order_do_not_change_the_figures():
    model = ToyModel(markov)
    titles = TITLES * 5
    sources = [[i] for i in range(len(titles))]
    one = diagnostics.teacher_forced(model, sources, titles, FORBIDDEN, 1)
    many = diagnostics.teacher_forced(model, sources, titles, FORBIDDEN, 4)
    assert max(model.calls) == 4
    for a, b in zip(one.gold_logp, many.gold_logp):
        np.testing.assert_array_equal(a, b)


def test_ties_count_as_errors():
    uniform = ToyModel(lambda source, prefix: np.full(5, 0.2))
    clean = diagnostics.teacher_forced(uniform, [[1]], [[A, END]])
    assert not clean.correct[0].any()


def test_recovery_cases_spread_positions_evenly():
    titles = [[A] * 10 + [END], [A, END], [END]]
    assert diagnostics.recovery_cases(titles) == [
        *[(0, k) for k in range(10)],
        (1, 0),
    ]
    assert diagnostics.recovery_cases(titles, max_positions=3) == [
        (0, 0),
        (0, 4),
        (0, 9),
        (1, 0),
    ]


def test_length_scores_average_to_the_published_rouge_l():
    predictions = ["标题生成方法", "一种新的方法", "", "深度学习"]
    references = ["标题生成的方法", "新方法", "空", "深度 学习 模型"]
    pairs = diagnostics.length_scores(predictions, references)
    assert [length for length, _ in pairs] == [7, 3, 1, 6]
    assert np.mean([score for _, score in pairs]) == pytest.approx(
        score_titles(predictions, references)["rouge-l"]
    )


def test_diagnose_returns_all_three_with_a_decoder():
    model = ToyModel(markov)
    names = {A: "甲", B: "乙", C: "丙", END: ""}
    result = diagnostics.diagnose(
        model,
        SOURCES,
        TITLES,
        references=["甲乙", "甲丙甲", "乙"],
        decode=lambda ids: "".join(names[i] for i in ids),
        options=diagnostics.Options(span=2),
        forbidden=FORBIDDEN,
    )
    assert result["titles"] == 3
    assert result["predictions"] == ["甲乙"] * 3
    assert result["length"]["pairs"][0] == [2, pytest.approx(1.0)]
    assert result["recovery"]["offset"] == [1, 2]


@pytest.mark.parametrize(
    "options", [{"span": 0}, {"max_positions": 0}, {"limit": -1}]
)
def test_options_refuse_nonsense(options):
    with pytest.raises(ValueError):
        diagnostics.Options(**options)


# The report -------------------------------------------------------------------


def _run_result(label, seed, shift):
    """A per-run result in the shape `diagnose_run` returns."""
    model = ToyModel(markov)
    result = diagnostics.diagnose(
        model,
        SOURCES,
        TITLES,
        references=["甲乙", "甲丙甲", "乙"],
        decode=lambda ids: "甲乙",
        options=diagnostics.Options(span=2),
        forbidden=FORBIDDEN,
    )
    result.pop("predictions")
    result["survival"]["survival"] = [
        value + shift for value in result["survival"]["survival"]
    ]
    return {
        **result,
        "label": label,
        "strategy": label,
        "seed": seed,
        "dir": f"runs/{label}-{seed}",
    }


def test_aggregate_gives_mean_and_std_over_seeds():
    results = [
        _run_result("baseline", 0, 0.0),
        _run_result("baseline", 1, 0.1),
        _run_result("replace", 0, 0.0),
    ]
    rows = diagnostics_report.aggregate(results)
    first = rows["survival"][0]
    assert (first["strategy"], first["x"], first["n"]) == ("baseline", 1, 2)
    assert first["survival"]["mean"] == pytest.approx(2 / 3 + 0.05)
    assert first["survival"]["std"] == pytest.approx(0.1 / math.sqrt(2))
    replace = [r for r in rows["survival"] if r["strategy"] == "replace"]
    assert [r["x"] for r in replace] == [1, 2, 3, 4]
    assert replace[0]["survival"]["std"] is None
    recovery = rows["recovery"][0]
    assert recovery["own_ce_increase"]["mean"] == pytest.approx(
        recovery["own_ce"]["mean"] - recovery["clean_ce"]["mean"]
    )
    assert [r["x"] for r in rows["length"][:3]] == ["1", "2", "3"]


def test_aggregate_refuses_one_seed_twice():
    results = [_run_result("gp", 0, 0.0), _run_result("gp", 0, 0.0)]
    with pytest.raises(ValueError, match="seed 0"):
        diagnostics_report.aggregate(results)


def test_length_buckets():
    assert diagnostics_report.length_buckets([3, 4, 5, 9], [4, 6]) == [
        (3, 4),
        (5, 6),
        (7, 9),
    ]
    lengths = list(range(1, 21))
    assert diagnostics_report.length_buckets(lengths) == [
        (1, 5),
        (6, 10),
        (11, 15),
        (16, 20),
    ]
    assert diagnostics_report.length_buckets([5, 5, 5]) == [(5, 5)]


def test_write_report_writes_tables_and_plots(tmp_path):
    from matplotlib import image

    results = [
        _run_result("baseline", 0, 0.0),
        _run_result("baseline", 1, 0.1),
        _run_result("replace", 0, 0.0),
    ]
    options = {"span": 2, "max_positions": None, "seed": 0, "limit": None}
    markdown = diagnostics_report.write_report(
        results, tmp_path, options, commit="abc1234"
    )
    for name in diagnostics_report.DIAGNOSTICS:
        for suffix in ("md", "csv", "json"):
            assert (tmp_path / f"{name}.{suffix}").stat().st_size > 0
        assert image.imread(tmp_path / f"{name}.png").shape[0] > 100
        assert f"]({name}.png)" in markdown
    assert "| 1 | 3 | 71.7 ± 7.1 | 66.7 ± 0.0 | 66.7 | 66.7 |" in markdown
    assert "disagree" in markdown  # the shifted survival fails the check


# The UniLM model --------------------------------------------------------------

UNILM_VOCAB, UNILM_END = 24, 3


@pytest.fixture(scope="module")
def unilm():
    """A tiny random UniLM; [SEP]'s bias makes titles end at varied
    lengths, [PAD]'s keeps it out of the titles."""
    from models.bert import build_transformer_model

    model = build_transformer_model(
        None,
        application="unilm",
        vocab_size=UNILM_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            np.ones(w.shape)
            if w.path.endswith("gamma")
            else rng.normal(0, 0.2, w.shape)
            for w in model.weights
        ]
    )
    bias = np.zeros(UNILM_VOCAB)
    bias[UNILM_END], bias[0] = 2.5, -30.0
    model.bert_network["MLM-Bias"].bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def scorer(unilm):
    """One scorer for the module: its compiled passes are reused."""
    return run_diagnostics.UniLMScorer(unilm, UNILM_END, 8, batch_size=4)


def _sources_and_titles(count, seed=1):
    rng = np.random.default_rng(seed)
    sources = [
        [2, *rng.integers(5, UNILM_VOCAB, rng.integers(1, 12)), UNILM_END]
        for _ in range(count)
    ]
    titles = [
        [*rng.integers(5, UNILM_VOCAB, rng.integers(0, 7)), UNILM_END]
        for _ in range(count)
    ]
    return sources, titles


def test_unilm_log_probs_equal_the_model_read_one_pair_at_a_time(unilm, scorer):
    import keras

    sources, titles = _sources_and_titles(3)
    logp = scorer.log_probs(sources, titles)
    assert logp.shape[:2] == (3, 8)
    for row, (source, title) in enumerate(zip(sources, titles)):
        token_ids = np.array([source + title])
        segment_ids = np.array([[0] * len(source) + [1] * len(title)])
        probas = keras.ops.convert_to_numpy(unilm([token_ids, segment_ids]))
        # The output at position p predicts the token at p + 1.
        expected = np.log(probas[0, len(source) - 1 : -1])
        np.testing.assert_allclose(
            logp[row, : len(title)], expected, rtol=1e-4, atol=1e-5
        )


def test_unilm_greedy_titles_are_the_teacher_forced_argmax(scorer):
    """Decoder and teacher-forced pass read the same model: each greedy
    token is the strict argmax after the greedy prefix."""
    sources, _ = _sources_and_titles(10, seed=2)
    greedy = scorer.greedy(sources)
    assert len({len(title) for title in greedy}) > 2
    scored = diagnostics.teacher_forced(scorer, sources, greedy, batch_size=4)
    assert all(correct.all() for correct in scored.correct)
    curves = diagnostics.survival(greedy, greedy, scored.correct)
    assert curves["survival"] == curves["teacher_forced"]
    assert set(curves["survival"]) == {1.0}


def test_unilm_survival_equals_teacher_forced_survival(scorer):
    sources, _ = _sources_and_titles(12, seed=3)
    greedy = scorer.greedy(sources)
    # References that share the first tokens of the greedy titles, then
    # leave them: survival is neither 0 nor 1 everywhere.
    titles = [
        title[: i % 3] + [5 + i % 7, UNILM_END]
        for i, title in enumerate(greedy)
    ]
    result = diagnostics.diagnose(
        scorer, sources, titles, forbidden=(0, 1, 2, UNILM_END), batch_size=4
    )
    curves = result["survival"]
    assert 0 < curves["survival"][0] < 1
    assert curves["survival"] == curves["teacher_forced"]
    assert result["recovery"]["cases"][0] == sum(len(t) - 1 for t in titles)


def test_unilm_scorer_refuses_more_rows_than_its_batch(unilm):
    scorer = run_diagnostics.UniLMScorer(unilm, UNILM_END, 8, batch_size=2)
    sources, titles = _sources_and_titles(3)
    with pytest.raises(ValueError, match="at most 2"):
        scorer.log_probs(sources, titles)
