"""tasks/lib/metrics.py against the published loop, hand-derived values and
edge cases."""

import json
import math
import random
import sys
import warnings
from importlib import metadata

import pytest
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu
from rouge import Rouge

from tasks.lib import metrics
from tasks.lib.metrics import SCORING
from tasks.lib.metrics import corpus_bleu_chars
from tasks.lib.metrics import score_titles
from tasks.lib.metrics import score_titles_words
from tasks.lib.metrics import warn_if_collapsed

CHARS = "我爱你他中国人民的科学研究与发展模型训练偏差ABCxyz0123 ."
F_EPS = 1e-8  # rouge 1.0.1 computes F = 2PR / (P + R + 1e-8)


def published_scores(predictions, references):
    """The evaluate() loop of task_seq2seq_autotitle_csl.py, written out."""
    rouge = Rouge()
    smooth = SmoothingFunction().method1
    total, rouge_1, rouge_2, rouge_l, bleu = 0, 0, 0, 0, 0
    for title, pred in zip(references, predictions):
        total += 1
        title = " ".join(title).lower()
        pred_title = " ".join(pred).lower()
        if pred_title.strip():
            scores = rouge.get_scores(hyps=pred_title, refs=title)
            rouge_1 += scores[0]["rouge-1"]["f"]
            rouge_2 += scores[0]["rouge-2"]["f"]
            rouge_l += scores[0]["rouge-l"]["f"]
            bleu += sentence_bleu(
                references=[title.split(" ")],
                hypothesis=pred_title.split(" "),
                smoothing_function=smooth,
            )
    return {
        "rouge-1": rouge_1 / total,
        "rouge-2": rouge_2 / total,
        "rouge-l": rouge_l / total,
        "bleu": bleu / total,
    }


def random_text(rng, low, high):
    return "".join(rng.choices(CHARS, k=rng.randint(low, high)))


def random_pairs(count=300, seed=0):
    """Pairs the published loop accepts: references with scorable text,
    predictions empty, one character, or longer (never exactly '.')."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < count:
        pred = random_text(rng, *rng.choice([(0, 0), (1, 1), (2, 40)]))
        ref = random_text(rng, 1, 40)
        if pred != "." and ref.replace(".", "").strip():
            pairs.append((pred, ref))
    return [p for p, _ in pairs], [r for _, r in pairs]


def assert_scores(actual, expected, tol=1e-12):
    assert set(actual) == {"rouge-1", "rouge-2", "rouge-l", "bleu"}
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol), key


# Parity with the published loop --------------------------------------------


def test_equals_published_loop_on_random_pairs():
    preds, refs = random_pairs()
    assert sum(p == "" for p in preds) > 20
    assert sum(len(p) == 1 for p in preds) > 20
    assert_scores(score_titles(preds, refs), published_scores(preds, refs))


def test_iterative_rouge_l_equals_package_on_random_pairs():
    """The long-text path must give the package's ROUGE-L bit for bit."""
    preds, refs = random_pairs(seed=1)
    for pred, ref in zip(preds, refs):
        pred, ref = " ".join(pred).lower(), " ".join(ref).lower()
        if not pred.strip():
            continue
        expected = Rouge().get_scores(hyps=pred, refs=ref)[0]["rouge-l"]["f"]
        sentences = metrics._rouge_sentences
        actual = metrics._rouge_l_f(sentences(pred), sentences(ref))
        assert actual == expected, (pred, ref)


def test_long_texts_score_like_package_without_recursion_error():
    rng = random.Random(2)
    pred = "".join(rng.choices("我爱你他们", k=1200))
    ref = "".join(rng.choices("我爱你他们", k=1100))
    with pytest.raises(RecursionError):  # the quirk the guard exists for
        published_scores([pred], [ref])
    actual = score_titles([pred], [ref])
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        expected = published_scores([pred], [ref])
    finally:
        sys.setrecursionlimit(limit)
    assert_scores(actual, expected)


# Golden values derived by hand ---------------------------------------------


def f_score(p, r):
    return 2.0 * ((p * r) / (p + r + F_EPS))


def test_golden_one_substitution():
    """'我爱你' vs '我爱他': unigrams {我,爱} of 3 shared, bigram 我爱 of 2,
    LCS 我爱 = 2 of 3. BLEU p1=2/3, p2=1/2, p3 and p4 have no match and
    method1 gives 0.1/1 each; equal lengths, so brevity penalty 1."""
    bleu = (2 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25  # = (1/300)^(1/4) ~ 0.2403
    expected = {
        "rouge-1": f_score(2 / 3, 2 / 3),
        "rouge-2": f_score(1 / 2, 1 / 2),
        "rouge-l": f_score(2 / 3, 2 / 3),
        "bleu": bleu,
    }
    assert_scores(score_titles(["我爱你"], ["我爱他"]), expected)
    assert bleu == pytest.approx(0.24028114141347542, abs=1e-15)


def test_golden_short_prediction_brevity_penalty():
    """'我爱' vs '我爱他': P=1, R=2/3 (unigrams and LCS), bigrams P=1 R=1/2.
    BLEU p1=p2=1, no trigram or 4-gram in the hypothesis: 0.1 each;
    BP = exp(1 - 3/2)."""
    bleu = math.exp(1 - 3 / 2) * (1 * 1 * 0.1 * 0.1) ** 0.25
    expected = {
        "rouge-1": f_score(1, 2 / 3),
        "rouge-2": f_score(1, 1 / 2),
        "rouge-l": f_score(1, 2 / 3),
        "bleu": bleu,
    }
    assert_scores(score_titles(["我爱"], ["我爱他"]), expected)


def test_golden_exact_match_is_not_one():
    """F = 2/(2 + 1e-8), and a 3-character title has no 4-gram, so method1
    BLEU of a perfect match is 0.1^(1/4) ~ 0.562."""
    perfect = f_score(1, 1)
    expected = {
        "rouge-1": perfect,
        "rouge-2": perfect,
        "rouge-l": perfect,
        "bleu": 0.1**0.25,
    }
    assert_scores(score_titles(["我爱你"], ["我爱你"]), expected)


def test_golden_single_character_and_case():
    """'A' vs 'a' after lower-casing: one unigram matches; no bigrams at
    all, so rouge-2 P=R=0 and F=0; BLEU p1=1, p2..p4 = 0.1."""
    expected = {
        "rouge-1": f_score(1, 1),
        "rouge-2": 0.0,
        "rouge-l": f_score(1, 1),
        "bleu": (1 * 0.1 * 0.1 * 0.1) ** 0.25,
    }
    assert_scores(score_titles(["A"], ["a"]), expected)


def test_golden_repetition_not_penalised_by_rouge():
    """rouge counts distinct n-grams: '哈哈哈' vs '哈哈' has unigram sets
    {哈} and {哈}, a perfect ROUGE-1. BLEU clips counts: p1=2/3, p2=1/2,
    p3=0.1/1, p4=0.1/1 (no 4-gram), BP=1 (hypothesis longer)."""
    expected = {
        "rouge-1": f_score(1, 1),
        "rouge-2": f_score(1, 1),
        "rouge-l": f_score(1, 1),
        "bleu": (2 / 3 * 1 / 2 * 0.1 * 0.1) ** 0.25,
    }
    assert_scores(score_titles(["哈哈哈"], ["哈哈"]), expected)


def test_golden_average_counts_empty_prediction_as_zero():
    """Two pairs: the golden '我爱你'/'我爱他' and an empty prediction."""
    one = score_titles(["我爱你"], ["我爱他"])
    both = score_titles(["我爱你", ""], ["我爱他", "科学"])
    assert_scores(both, {key: value / 2 for key, value in one.items()})


# Edge cases -----------------------------------------------------------------


def test_empty_whitespace_and_single_characters_do_not_crash():
    preds = ["", " ", "\t", "我", "a", "我", "x y"]
    refs = ["我", "我", "我", "我", "b", "A", "x"]
    scores = score_titles(preds, refs)
    assert 0.0 < scores["rouge-1"] < 1.0


@pytest.mark.parametrize("ref", ["", " ", "  \n"])
def test_blank_reference_scores_zero_with_warning(ref):
    with pytest.warns(UserWarning, match="1 with empty reference"):
        scores = score_titles(["我爱你", "我爱你"], [ref, "我爱你"])
    perfect = score_titles(["我爱你"], ["我爱你"])
    assert_scores(scores, {key: v / 2 for key, v in perfect.items()})


def test_prediction_rouge_reads_as_empty_scores_zero_with_warning():
    with pytest.raises(ValueError, match="Hypothesis is empty"):
        published_scores(["."], ["我."])  # the package quirk
    with pytest.warns(UserWarning, match="1 with prediction '.'"):
        scores = score_titles([".", "我"], ["我.", "我"])
    assert scores["rouge-1"] == pytest.approx(f_score(1, 1) / 2)


@pytest.mark.parametrize("ref", [".", "..", " . ", ". ."])
def test_reference_without_scorable_text_raises(ref):
    with pytest.raises(ValueError, match=r"reference 1 .*no text the rouge"):
        score_titles(["我", "我"], ["我", ref])


def test_no_warning_on_ordinary_pairs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_titles(["", "我爱你"], ["我爱他", "我爱他"])


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_titles(["我", "你"], ["我"])
    with pytest.raises(ValueError):
        score_titles_words(["我"], [])
    with pytest.raises(ValueError):
        corpus_bleu_chars([], ["我"])


def test_no_pairs_and_wrong_types_raise():
    with pytest.raises(ValueError, match="no pairs"):
        score_titles([], [])
    with pytest.raises(TypeError, match="not one str"):
        score_titles("我爱你", "我爱他")
    with pytest.raises(TypeError, match=r"predictions\[1\] is NoneType"):
        score_titles(["我", None], ["我", "你"])


# Variants that are not the published numbers --------------------------------


def test_word_level_is_published_loop_on_jieba_words():
    import jieba

    preds = ["我爱北京天安门", "机器学习 模型", "", "中"]
    refs = ["我爱北京", "深度学习模型", "中国", "中国"]

    def words(text):
        return [w for w in jieba.lcut(text) if w.strip()]

    expected = published_scores(
        [words(p) for p in preds], [words(r) for r in refs]
    )
    actual = score_titles_words(preds, refs)
    assert_scores(actual, expected)
    assert actual != score_titles(preds, refs)


def test_corpus_bleu_by_hand():
    """Hypotheses 我爱他 (3 chars) and '' ; references 我爱他, 你好.
    nltk counts at least one n-gram per order for each hypothesis
    (max(1, count)), so the empty one adds 1 to every denominator:
    p1=3/4, p2=2/3, p3=1/2, p4=0/2 -> method1 0.1/2. Lengths c=3, r=5:
    BP = exp(1 - 5/3)."""
    p = [3 / 4, 2 / 3, 1 / 2, 0.1 / 2]
    expected = math.exp(1 - 5 / 3) * math.exp(sum(map(math.log, p)) / 4)
    actual = corpus_bleu_chars(["我爱他", ""], ["我爱他", "你好"])
    assert actual == pytest.approx(expected, abs=1e-12)


def test_corpus_bleu_single_pair_equals_sentence_bleu():
    single = corpus_bleu_chars(["我爱你"], ["我爱他"])
    assert single == pytest.approx(score_titles(["我爱你"], ["我爱他"])["bleu"])


def test_corpus_bleu_blank_texts_by_hand():
    """A blank prediction and a blank reference have no tokens: 我/我 gives
    p1 = 1/2 (the blank one adds 1 to the denominator), p2..p4 = 0.1/2
    (method1), lengths c = r = 1 so BP = 1."""
    expected = math.exp((math.log(1 / 2) + 3 * math.log(0.1 / 2)) / 4)
    actual = corpus_bleu_chars([" ", "我"], ["", "我"])
    assert actual == pytest.approx(expected, abs=1e-12)


# Reporting functions --------------------------------------------------------


def test_scoring_describes_the_method():
    assert SCORING["rouge"]["version"] == metadata.version("rouge")
    assert SCORING["bleu"]["version"] == metadata.version("nltk")
    assert SCORING["bleu"]["smoothing"] == "method1"
    assert SCORING["empty_prediction"] == 0.0
    assert "character" in SCORING["tokenization"]
    assert "sentence" in SCORING["average"]
    assert json.loads(json.dumps(SCORING)) == SCORING


def test_warn_if_collapsed():
    with pytest.warns(UserWarning, match="2 distinct titles in 10"):
        assert warn_if_collapsed(["甲"] * 9 + ["乙"]) == pytest.approx(0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_collapsed(["甲", "乙", "丙"]) == 1.0
