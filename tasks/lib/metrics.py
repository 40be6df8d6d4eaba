"""Chinese title scores, computed exactly as the exposure-bias experiments.

`score_titles` reproduces the `evaluate` loop of bojone/exposure_bias and
bert4keras `examples/task_seq2seq_autotitle_csl.py`: each title is split
into characters joined by spaces and lower-cased; ROUGE-1/2/L F come from
the `rouge` package (`Rouge().get_scores`), BLEU from nltk `sentence_bleu`
with `SmoothingFunction().method1`; every score is a sentence average over
all pairs, and an empty prediction scores 0. Scoring characters is what
makes unspaced Chinese scorable at all (pltrdy/rouge#51).

Published numbers cannot be compared unless they were scored the same way
(sacrebleu#147, google-research#168), so `SCORING` describes the method for
reports, and the variants `score_titles_words` (jieba words) and
`corpus_bleu_chars` (corpus BLEU) are named so that they cannot be mistaken
for the published numbers.

Cases the published loop does not define, and what happens here:

* Empty or whitespace-only reference: the pair scores 0 (the published
  loop crashes inside `rouge` on an empty one) and a warning counts them.
* A reference with text but nothing the `rouge` package scores (only "."
  and whitespace: `rouge` splits sentences on "." and drops them):
  `ValueError`, because a silent 0 would hide broken data.
* The prediction "." (the only non-blank prediction `rouge` reads as empty):
  scores 0 like an empty prediction, with a warning; a content-free title
  is a wrong answer, not broken data.
* Long texts: `rouge` rebuilds the LCS recursively and hits RecursionError
  near 1,000 characters (pltrdy/rouge#67); such pairs get ROUGE-L from
  `_rouge_l_f`, an iterative copy of the package's computation.
"""

import logging
import sys
import warnings
from importlib import metadata
from typing import Callable
from typing import Sequence

from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import corpus_bleu
from nltk.translate.bleu_score import sentence_bleu
from rouge import Rouge

METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu")

# Frames the caller may already hold when `rouge` starts recursing; pairs
# whose LCS could recurse deeper than the limit minus this go iterative.
_STACK_HEADROOM = 300


def _version(package: str) -> str:
    """Installed version, so reports say which implementation scored."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


SCORING = {
    "summary": (
        f"character-level ROUGE-1/2/L F (rouge {_version('rouge')}) and "
        f"sentence BLEU (nltk {_version('nltk')}, smoothing method1), "
        "averaged over sentences; empty prediction = 0"
    ),
    "reference": (
        "evaluate() of bojone/exposure_bias and bert4keras "
        "examples/task_seq2seq_autotitle_csl.py"
    ),
    "tokenization": "characters: ' '.join(text).lower()",
    "rouge": {
        "package": "rouge",
        "version": _version("rouge"),
        "scores": "F of rouge-1, rouge-2, rouge-l (summary level)",
    },
    "bleu": {
        "package": "nltk",
        "version": _version("nltk"),
        "function": "nltk.translate.bleu_score.sentence_bleu",
        "weights": [0.25, 0.25, 0.25, 0.25],
        "smoothing": "method1",
    },
    "average": "sentence average over all pairs",
    "empty_prediction": 0.0,
    "empty_reference": 0.0,
    "units": "fractions in [0, 1]",
}


def score_titles(
    predictions: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """ROUGE-1/2/L F and BLEU as the published experiments computed them.

    Returns fractions keyed by `METRICS`. Raises `ValueError` on lists of
    different lengths, no pairs, or a reference without scorable text.
    """
    _check_pairs(predictions, references)
    return _average_scores(
        [_spaced_chars(text) for text in predictions],
        [_spaced_chars(text) for text in references],
    )


def score_titles_words(
    predictions: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """The `score_titles` loop on jieba words. NOT the published numbers.

    Word scores are lower than character scores and depend on the jieba
    dictionary (sacrebleu#147 shows such gaps); use them as a second view,
    never next to character-level numbers from papers.
    """
    _check_pairs(predictions, references)
    segment = _jieba_cut()
    return _average_scores(
        [_spaced_words(text, segment) for text in predictions],
        [_spaced_words(text, segment) for text in references],
    )


def corpus_bleu_chars(
    predictions: Sequence[str], references: Sequence[str]
) -> float:
    """nltk corpus BLEU (method1) on characters. NOT the published BLEU.

    Tokens are the published sentence-BLEU tokens. An empty prediction
    has no tokens: its length 0 lowers the brevity penalty, and nltk still
    adds 1 to each n-gram denominator for it (max(1, count)). Corpus BLEU
    pools n-gram counts, so it is not the sentence average.
    """
    _check_pairs(predictions, references)
    hypotheses = [_bleu_tokens(_spaced_chars(text)) for text in predictions]
    refs = [[_bleu_tokens(_spaced_chars(text))] for text in references]
    smoothing = SmoothingFunction().method1
    return float(corpus_bleu(refs, hypotheses, smoothing_function=smoothing))


# Below this fraction of distinct predictions a run counts as collapsed.
MIN_DISTINCT_FRACTION = 0.5


def warn_if_collapsed(
    predictions: Sequence[str],
    min_distinct_fraction: float = MIN_DISTINCT_FRACTION,
    what: str = "predictions",
) -> float:
    """Warn when predictions collapse to a few distinct titles, each time
    (Python shows a warning once per place otherwise: the test set's would
    never show after the validation's).

    A collapsed decoder (bert4keras#215) can still score decent ROUGE,
    because `rouge` counts distinct n-grams only; a warning makes it
    visible. Returns the fraction of distinct predictions.
    """
    if not predictions:
        raise ValueError("no predictions to check")
    fraction = len(set(predictions)) / len(predictions)
    if fraction < min_distinct_fraction:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(
                f"{what} collapsed: {len(set(predictions))} distinct "
                f"titles in {len(predictions)} ({fraction:.0%} < "
                f"{min_distinct_fraction:.0%})",
                stacklevel=2,
            )
    return fraction


def _check_pairs(predictions, references) -> None:
    """Fail early on inputs that would otherwise score something wrong."""
    named = (("predictions", predictions), ("references", references))
    for name, texts in named:
        if isinstance(texts, str):
            raise TypeError(f"{name} must be a list of titles, not one str")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{index}] is {type(text).__name__}")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        raise ValueError("no pairs to score")


def _spaced_chars(text: str) -> str:
    """Characters joined by spaces, lower-cased: the published tokens."""
    return " ".join(text).lower()


def _spaced_words(text: str, segment: Callable[[str], list]) -> str:
    """jieba words joined by spaces; space tokens would become empty words."""
    return " ".join(w for w in segment(text) if w.strip()).lower()


def _jieba_cut() -> Callable[[str], list]:
    """Import jieba only when words are scored: it loads a dictionary."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut


def _bleu_tokens(spaced: str) -> list[str]:
    """Published BLEU tokens (`split(' ')`), none for a blank text."""
    return spaced.split(" ") if spaced.strip() else []


def _average_scores(preds: list[str], refs: list[str]) -> dict[str, float]:
    """Sum per-pair scores in order and divide by all pairs, as published."""
    _check_references(refs)
    totals = dict.fromkeys(METRICS, 0.0)
    zeroed = {"empty reference": 0, "prediction '.'": 0}
    for pred, ref in zip(preds, refs):
        scores, reason = _pair_scores(pred, ref)
        if reason:
            zeroed[reason] += 1
        for metric in METRICS:
            totals[metric] += scores[metric]
    _warn_zeroed(zeroed)
    return {metric: total / len(preds) for metric, total in totals.items()}


def _check_references(refs: list[str]) -> None:
    """A reference with text that `rouge` cannot see is a data error."""
    for index, ref in enumerate(refs):
        words = _split_words(_rouge_sentences(ref))
        if ref.strip() and not any(words):
            raise ValueError(
                f"reference {index} ({ref!r}) has no text the rouge package "
                "scores: it drops '.' and whitespace"
            )


def _pair_scores(pred: str, ref: str) -> tuple[dict, str | None]:
    """One pair's scores, and why it was set to 0 where published crashes."""
    zero = dict.fromkeys(METRICS, 0.0)
    if not pred.strip():
        return zero, None
    if not ref.strip():
        return zero, "empty reference"
    if not _rouge_sentences(pred):
        return zero, "prediction '.'"
    scores = _rouge_f(pred, ref)
    scores["bleu"] = sentence_bleu(
        references=[ref.split(" ")],
        hypothesis=pred.split(" "),
        smoothing_function=SmoothingFunction().method1,
    )
    return scores, None


def _warn_zeroed(zeroed: dict[str, int]) -> None:
    """Say how many pairs scored 0 by rule, so no 0 is silent."""
    counts = [f"{n} with {reason}" for reason, n in zeroed.items() if n]
    if counts:
        warnings.warn(
            "pairs scored 0 by rule: " + ", ".join(counts), stacklevel=4
        )


def _rouge_f(pred: str, ref: str) -> dict[str, float]:
    """ROUGE F from the package; ROUGE-L iterative where it would recurse."""
    hyp_sentences, ref_sentences = _rouge_sentences(pred), _rouge_sentences(ref)
    depth = len(_split_words(hyp_sentences)) + len(_split_words(ref_sentences))
    if depth + _STACK_HEADROOM < sys.getrecursionlimit():
        scores = Rouge().get_scores(hyps=pred, refs=ref)[0]
        return {metric: scores[metric]["f"] for metric in METRICS[:3]}
    scores = Rouge(metrics=["rouge-1", "rouge-2"]).get_scores(pred, ref)[0]
    return {
        "rouge-1": scores["rouge-1"]["f"],
        "rouge-2": scores["rouge-2"]["f"],
        "rouge-l": _rouge_l_f(hyp_sentences, ref_sentences),
    }


def _rouge_sentences(text: str) -> list[str]:
    """Sentences as `Rouge._get_scores` cuts them: on '.', spaces squeezed."""
    return [" ".join(part.split()) for part in text.split(".") if part]


def _split_words(sentences: list[str]) -> list[str]:
    """Words as `rouge_score._split_into_words` yields them ('' included)."""
    return [word for sentence in sentences for word in sentence.split(" ")]


def _rouge_l_f(hyp_sentences: list[str], ref_sentences: list[str]) -> float:
    """`rouge_score.rouge_l_summary_level` F (exclusive), without recursion.

    Same arithmetic in the same order: distinct-word counts, the union of
    the words of each reconstructed LCS, and the 1e-8 in the F denominator.
    """
    m = len(set(_split_words(ref_sentences)))
    n = len(set(_split_words(hyp_sentences)))
    union = set()
    for ref_sentence in ref_sentences:
        ref_words = ref_sentence.split(" ")
        for hyp_sentence in hyp_sentences:
            union |= _lcs_words(ref_words, hyp_sentence.split(" "))
    r_lcs = len(union) / m
    p_lcs = len(union) / n
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))


def _lcs_words(x: list[str], y: list[str]) -> set[str]:
    """Words of the LCS that `rouge_score._recon_lcs` picks, iteratively.

    Ties go the way the package breaks them (up only when strictly
    better), because a different LCS can hold different words.
    """
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            if x[i - 1] == y[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    words, i, j = set(), len(x), len(y)
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            words.add(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words
