"""Exposure-bias diagnostics: survival, recovery and length curves.

ROUGE after decoding mixes exposure bias with everything else a model gets
wrong. These three curves look at the mechanism itself, on a run's test set:

- *survival*: S(t), the fraction of greedy titles whose first t tokens equal
  the reference's, beside the product of the teacher-forced accuracies
  a(1)...a(t), which is what S(t) would be if errors at different positions
  were independent. A greedy title still on the reference at step t has
  read reference tokens only, so S(t) is also exactly the fraction of titles
  whose teacher-forced argmax is right at every position up to t (computed
  too, as a check that the decoder and the teacher-forced pass agree). The
  gap between S and the product therefore shows how errors are shared out
  among titles: above it, mistakes concentrate in a few hard titles; below
  it, they are spread out, each title holding its own few. It says nothing
  of what follows a mistake: a title that made one has left the curve.
- *recovery*: one wrong token put into the reference prefix at position k
  (the model's own most likely wrong token, and separately a uniformly
  random one), then the cross-entropy and accuracy of the reference
  continuation at k+1 ... k+m, against the same positions after the clean
  prefix. This is what happens after a mistake, where exposure bias lives:
  a model robust to its own mistakes has a flat curve near the clean one.
- *length*: ROUGE-L of the greedy titles (`tasks.lib.metrics.score_titles`, the
  published scoring) by reference length in characters.

The metrics talk to a model through a small interface, `DiagnosticModel`
(next-token log-probabilities under teacher forcing, and greedy titles), so
that a hand-built model with known probabilities can check them; the UniLM
model of a finished run is one implementation, `UniLMScorer` (in
`tasks/lib/run_diagnostics.py`, which diagnoses finished runs and caches
their results). A position counts as correct when the reference token's
log-probability is strictly the highest (a tie is an error, so a model
that predicts a uniform distribution is never right).
`tasks/lib/diagnostics_report.py` averages the results over seeds.
"""

import dataclasses
from typing import Protocol
from typing import Sequence

import numpy as np
from tqdm import tqdm

# Positions of a recovery case, 0-based in the title: the wrong token goes
# at k and the reference continues at k + 1 ... k + span.
DEFAULT_SPAN = 5
KINDS = ("own", "random")


class DiagnosticModel(Protocol):
    """What the diagnostics need from a model.

    `log_probs(sources, titles)` returns a float array (n, T, vocab_size)
    with T >= max(len(title)): entry [i, t, v] is log p(v | sources[i],
    titles[i][:t]), the teacher-forced next-token distribution (rows past
    len(titles[i]) are ignored). `greedy(sources)` returns the greedy title
    of each source, ending with the end token when it ended. Titles are
    lists of token ids whose last token is the end token unless they were
    cut; wrong tokens are drawn from `range(vocab_size)`.
    """

    vocab_size: int

    def log_probs(
        self, sources: Sequence[list], titles: Sequence[list]
    ) -> np.ndarray: ...

    def greedy(
        self, sources: Sequence[list], progress: bool = False
    ) -> list: ...


# Teacher-forced figures ------------------------------------------------------


@dataclasses.dataclass
class TeacherForced:
    """Per title, per position: the reference token's log-probability,
    whether it was the strict argmax, and the likeliest other token that is
    not forbidden (the model's own most likely mistake)."""

    gold_logp: list
    correct: list
    best_wrong: list


def teacher_forced(
    model,
    sources,
    titles,
    forbidden=(),
    batch_size=64,
    progress=False,
    desc="teacher-forced",
):
    """Score every title under teacher forcing, `batch_size` at a time.

    Rows are sorted by length so that a batch pads little; results come
    back in input order.
    """
    order = sorted(
        range(len(titles)), key=lambda i: len(sources[i]) + len(titles[i])
    )
    forbidden = np.asarray(sorted(set(forbidden)), dtype=int)
    figures = [None] * len(titles)
    starts = range(0, len(order), batch_size)
    for start in tqdm(
        starts, desc=desc, unit="batch", disable=not progress, leave=False
    ):
        rows = order[start : start + batch_size]
        batch = [titles[i] for i in rows]
        logp = model.log_probs([sources[i] for i in rows], batch)
        for i, row in zip(rows, _batch_figures(logp, batch, forbidden)):
            figures[i] = row
    if not figures:
        return TeacherForced([], [], [])
    return TeacherForced(*(list(column) for column in zip(*figures)))


def _batch_figures(logp, titles, forbidden):
    """(gold log-prob, strict-argmax flag, best wrong token) per position
    of each title, reduced for the whole batch at once."""
    horizon = max(len(title) for title in titles)
    logp = np.array(logp[:, :horizon], dtype=np.float32)
    gold = np.zeros(logp.shape[:2], dtype=int)
    for row, title in enumerate(titles):
        gold[row, : len(title)] = title
    gold_logp = np.take_along_axis(logp, gold[..., None], axis=-1)[..., 0]
    np.put_along_axis(logp, gold[..., None], -np.inf, axis=-1)
    correct = gold_logp > logp.max(axis=-1)
    logp[..., forbidden] = -np.inf
    best_wrong = logp.argmax(axis=-1)
    return [
        (
            gold_logp[row, : len(title)].astype(np.float64),
            correct[row, : len(title)],
            best_wrong[row, : len(title)],
        )
        for row, title in enumerate(titles)
    ]


# Survival ---------------------------------------------------------------------


def survival(greedy, titles, correct):
    """Survival, teacher-forced accuracy and their independent product.

    For t = 1 ... max title length, over the titles at least t tokens long:
    `survival` the fraction whose greedy title starts with their first t
    tokens, `accuracy` the teacher-forced accuracy at t, `independent` the
    product of `accuracy` up to t, `teacher_forced` the fraction right at
    every position up to t (equal to `survival` for a greedy decoder).
    """
    horizon = max(len(title) for title in titles)
    curves = {
        key: []
        for key in (
            "position",
            "titles",
            "survival",
            "accuracy",
            "independent",
            "teacher_forced",
        )
    }
    product = 1.0
    for t in range(1, horizon + 1):
        alive = [i for i, title in enumerate(titles) if len(title) >= t]
        accuracy = np.mean([correct[i][t - 1] for i in alive])
        product *= accuracy
        curves["position"].append(t)
        curves["titles"].append(len(alive))
        curves["survival"].append(
            _fraction(list(greedy[i][:t]) == list(titles[i][:t]) for i in alive)
        )
        curves["accuracy"].append(float(accuracy))
        curves["independent"].append(float(product))
        curves["teacher_forced"].append(
            _fraction(bool(np.all(correct[i][:t])) for i in alive)
        )
    return curves


def _fraction(flags):
    flags = list(flags)
    return sum(flags) / len(flags)


# Recovery ---------------------------------------------------------------------


def recovery_cases(titles, max_positions=None):
    """(title, k) pairs: every position but the last, or at most
    `max_positions` of them spread evenly over the title."""
    cases = []
    for i, title in enumerate(titles):
        last = len(title) - 2  # the last token has nothing to continue
        if last < 0:
            continue
        positions = range(last + 1)
        if max_positions is not None and max_positions < last + 1:
            positions = np.unique(
                np.linspace(0, last, max_positions).round().astype(int)
            )
        cases += [(i, int(k)) for k in positions]
    return cases


def wrong_tokens(kind, cases, titles, clean, allowed, rng):
    """The wrong token of each case: the model's own most likely mistake,
    or one drawn uniformly from the allowed tokens other than the gold."""
    if kind == "own":
        return [int(clean.best_wrong[i][k]) for i, k in cases]
    if kind != "random":
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    tokens = []
    for i, k in cases:
        choices = allowed[allowed != titles[i][k]]
        tokens.append(int(choices[rng.integers(len(choices))]))
    return tokens


def recovery(
    model,
    sources,
    titles,
    clean,
    span=DEFAULT_SPAN,
    forbidden=(),
    max_positions=None,
    seed=0,
    batch_size=64,
    progress=False,
):
    """Cross-entropy and accuracy after one wrong token, against clean.

    For offsets j = 1 ... span, over every case (title, k) with k + j inside
    the title: `clean_ce` / `clean_accuracy` of reference token k + j after
    the reference prefix, and `<kind>_ce` / `<kind>_accuracy` after the same
    prefix with token k replaced by a wrong one (kinds `own` and `random`).
    Cases are pooled: a long title contributes more of them.
    """
    allowed = np.setdiff1d(np.arange(model.vocab_size), list(forbidden))
    if len(allowed) < 2:
        raise ValueError("fewer than two tokens may be used as wrong tokens")
    cases = recovery_cases(titles, max_positions)
    rng = np.random.default_rng(seed)
    curves = {"offset": list(range(1, span + 1)), "cases": [0] * span}
    sums = {f"clean_{name}": [0.0] * span for name in ("ce", "accuracy")}
    for kind in KINDS:
        wrong = wrong_tokens(kind, cases, titles, clean, allowed, rng)
        corrupted = [
            [*titles[i][:k], token, *titles[i][k + 1 :]]
            for (i, k), token in zip(cases, wrong)
        ]
        scored = teacher_forced(
            model,
            [sources[i] for i, _ in cases],
            corrupted,
            batch_size=batch_size,
            progress=progress,
            desc=f"recovery ({kind} token)",
        )
        sums[f"{kind}_ce"] = [0.0] * span
        sums[f"{kind}_accuracy"] = [0.0] * span
        for case, (i, k) in enumerate(cases):
            for j in range(1, min(span, len(titles[i]) - 1 - k) + 1):
                sums[f"{kind}_ce"][j - 1] -= scored.gold_logp[case][k + j]
                sums[f"{kind}_accuracy"][j - 1] += scored.correct[case][k + j]
                if kind == KINDS[0]:
                    curves["cases"][j - 1] += 1
                    sums["clean_ce"][j - 1] -= clean.gold_logp[i][k + j]
                    sums["clean_accuracy"][j - 1] += clean.correct[i][k + j]
    for key, values in sums.items():
        curves[key] = [
            float(total / count) if count else None
            for total, count in zip(values, curves["cases"])
        ]
    return curves


# Length ---------------------------------------------------------------------


def length_scores(predictions, references):
    """(reference length in characters, ROUGE-L) of each pair, scored by
    `score_titles` one pair at a time (its sentence average of one pair)."""
    # Deferred: the scoring libraries take a second to import, which
    # tasks/diagnose.py's --help (it reads DEFAULT_SPAN here) does without.
    from tasks.lib.metrics import score_titles

    return [
        [
            len("".join(reference.split())),
            score_titles([p], [reference])["rouge-l"],
        ]
        for p, reference in zip(predictions, references)
    ]


# All three ------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    """What a diagnosis depends on besides the model (the cache key)."""

    span: int = DEFAULT_SPAN
    max_positions: int | None = None
    seed: int = 0
    limit: int | None = None

    def __post_init__(self):
        if self.span < 1:
            raise ValueError(f"span must be at least 1, got {self.span}")
        for name in ("max_positions", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


def diagnose(
    model,
    sources,
    titles,
    references=None,
    decode=None,
    options=None,
    forbidden=(),
    batch_size=64,
    progress=False,
):
    """Survival, recovery and (with `references` and `decode`) length.

    `titles` are the reference token ids (ending with the end token unless
    cut); `decode` turns token ids into text for the length curve.
    """
    options = options or Options()
    clean = teacher_forced(
        model, sources, titles, forbidden, batch_size, progress
    )
    greedy = model.greedy(sources, progress=progress)
    result = {
        "titles": len(titles),
        "survival": survival(greedy, titles, clean.correct),
        "recovery": recovery(
            model,
            sources,
            titles,
            clean,
            options.span,
            forbidden,
            options.max_positions,
            options.seed,
            batch_size,
            progress,
        ),
    }
    if references is not None and decode is not None:
        predictions = [decode(ids) for ids in greedy]
        result["length"] = {"pairs": length_scores(predictions, references)}
        result["predictions"] = predictions
    return result
