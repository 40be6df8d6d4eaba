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
model of a finished run is one implementation, `UniLMScorer`. A position
counts as correct when the reference token's log-probability is strictly
the highest (a tie is an error, so a model that predicts a uniform
distribution is never right). Per-run results are cached in the run
directory as `diagnostics.json`, keyed by the options and the checksum of
`best.weights.h5`; `tasks/lib/diagnostics_report.py` averages them over seeds.
"""

import argparse
import dataclasses
import json
import pathlib
from typing import Protocol
from typing import Sequence

import numpy as np

# Positions of a recovery case, 0-based in the title: the wrong token goes
# at k and the reference continues at k + 1 ... k + span.
DEFAULT_SPAN = 5
KINDS = ("own", "random")
CACHE_FILE = "diagnostics.json"
CACHE_VERSION = 1


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
    from tqdm import tqdm

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


# The UniLM model --------------------------------------------------------------


class UniLMScorer:
    """`DiagnosticModel` for a UniLM model from `build_transformer_model`.

    Teacher-forced passes read `[CLS] source [SEP] title` in one forward
    pass (segment 1 for the title), gather the hidden states that predict
    each title token and apply the MLM head to those only; batches are
    filled to `batch_size` rows and padded to multiples of `bucket`, so a
    compiled pass serves many batches. Greedy titles come from the fast
    `Seq2SeqDecoder` (bert4keras's beam search with topk 1).
    """

    def __init__(self, model, end_id, title_maxlen, batch_size=64, bucket=32):
        from models.backend import compile_function
        from models.decoding import Seq2SeqDecoder

        self.model = model
        self.network = model.bert_network
        self.vocab_size = model.bert_config.vocab_size
        self.end_id = end_id
        self.batch_size, self.bucket = batch_size, bucket
        self.decoder = Seq2SeqDecoder(
            model, end_id=end_id, maxlen=title_maxlen, batch_size=batch_size
        )
        self.forward = compile_function(self._log_probs, model.variables)

    def greedy(self, sources, progress=False):
        return self.decoder.greedy_batch(list(sources), progress=progress)

    def log_probs(self, sources, titles):
        count = len(sources)
        if count > self.batch_size:
            raise ValueError(f"at most {self.batch_size} rows per call")
        token_ids, segment_ids, positions = self._pack(sources, titles)
        logp = self.forward(token_ids, segment_ids, positions)
        import keras

        return keras.ops.convert_to_numpy(logp)[:count]

    def _pack(self, sources, titles):
        """Inputs filled to `batch_size` rows with copies of the first."""
        rows = list(zip(sources, titles))
        rows += [rows[0]] * (self.batch_size - len(rows))
        length = _round_up(max(len(s) + len(t) for s, t in rows), self.bucket)
        horizon = _round_up(max(len(t) for _, t in rows), 8)
        token_ids = np.zeros((len(rows), length), dtype="int32")
        segment_ids = np.zeros_like(token_ids)
        positions = np.zeros((len(rows), horizon), dtype="int32")
        for row, (source, title) in enumerate(rows):
            end = len(source) + len(title)
            token_ids[row, :end] = [*source, *title]
            segment_ids[row, len(source) : end] = 1
            # The state at position p predicts the token at p + 1.
            positions[row, : len(title)] = (
                np.arange(len(title)) + len(source) - 1
            )
        return token_ids, segment_ids, positions

    def _log_probs(self, token_ids, segment_ids, positions):
        from keras import ops

        hidden = self.network(token_ids, segment_ids, output="hidden")
        hidden = ops.take_along_axis(hidden, positions[..., None], axis=1)
        logits = ops.cast(self.network.mlm_logits(hidden), "float32")
        return ops.log_softmax(logits, axis=-1)


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


# Finished runs ----------------------------------------------------------------


@dataclasses.dataclass
class RunInputs:
    """A finished run rebuilt: results, settings, model and test set."""

    directory: pathlib.Path
    results: dict
    args: argparse.Namespace
    model: object
    tokenizer: object
    test: list


def run_settings(directory):
    """The run's command-line settings, defaults filled in for flags that
    did not exist when it ran."""
    from tasks.lib.experiment import build_parser

    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no config.json (not a run directory of "
            "tasks/csl_title.py or tasks/lcsts_summary.py)"
        )
    saved = _read_json(path)
    defaults = {"maxlen": 256, "title_maxlen": 32}
    args = build_parser("", defaults).parse_args([])
    vars(args).update(saved)
    return args


def _read_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def check_run_dir(directory):
    """(results, settings) of a finished run, or an error naming what is
    missing; cheap, so every folder can be checked before the slow work."""
    from tasks.compare import load_run

    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    results = load_run(directory)
    args = run_settings(directory)
    weights = directory / "best.weights.h5"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights}: missing (the run finished no epoch, or was moved "
            "without it)"
        )
    return results, args


def load_finished_run(directory):
    """Rebuild the run's tokenizer, test split and best model.

    Uses the helpers of `tasks/lib/experiment.py` with the saved settings, then
    checks that the test set is the one the run scored (data checksums and
    the references of its predictions files).
    """
    directory = pathlib.Path(directory)
    results, args = check_run_dir(directory)
    try:
        return _rebuild(directory, results, args)
    except SystemExit as error:
        # The task's own checks exit with a message; name the run instead.
        raise ValueError(f"{directory}: {error}") from None


def _rebuild(directory, results, args):
    from tasks.lib.experiment import build_model
    from tasks.lib.experiment import is_tiny_default
    from tasks.lib.experiment import load_splits
    from tasks.lib.experiment import load_tokenizer
    from tasks.lib.experiment import resolve_model_files

    files = resolve_model_files(args)
    if files.vocab is None:
        if not is_tiny_default(args, files):
            raise ValueError(f"{directory}: the run names no vocabulary")
        files.vocab = str(directory / "vocab.txt")
        if not pathlib.Path(files.vocab).is_file():
            raise FileNotFoundError(f"{files.vocab}: missing")
    (_, _, test), data_info = load_splits(args)
    _check_data(directory, results.get("data"), data_info)
    _check_predictions(directory, test)
    tokenizer, keep_tokens = load_tokenizer(args, files, directory)
    # The architecture only: the trained weights replace the checkpoint's.
    files = dataclasses.replace(files, checkpoint=None)
    # The precision the run trained and decoded in (older runs: fp32).
    environment = results.get("environment") or {}
    precision = environment.get("precision", "fp32")
    model = build_model(
        args, files, keep_tokens, tokenizer.vocab_size, precision
    )
    model.load_weights(str(directory / "best.weights.h5"))
    return RunInputs(directory, results, args, model, tokenizer, test)


def _check_data(directory, recorded, rebuilt):
    """Data files must have the checksums the run recorded."""
    if not isinstance(recorded, dict):
        return
    for split, info in rebuilt.items():
        old = recorded.get(split)
        if not (isinstance(info, dict) and isinstance(old, dict)):
            continue
        if old.get("sha256") and old.get("sha256") != info.get("sha256"):
            raise ValueError(
                f"{directory}: {split} file {info.get('path')} changed since "
                "the run (sha256 differs from results.json)"
            )


def _check_predictions(directory, test):
    """The rebuilt test references must be those the run's predictions
    files list, line by line (catches changed data or data code)."""
    for path in sorted(directory.glob("predictions-beam*.tsv")):
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        if len(lines) != len(test):
            raise ValueError(
                f"{path}: {len(lines)} test titles, but the settings in "
                f"config.json rebuild {len(test)}: data changed since the run"
            )
        for number, (line, (title, _)) in enumerate(zip(lines, test), 2):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] != _one_line(title):
                raise ValueError(
                    f"{path}, line {number}: reference differs from the "
                    "rebuilt test set: data changed since the run"
                )


def _one_line(text):
    """A text as `tasks/lib/experiment.py` writes it into predictions files."""
    return " ".join(text.split())


def encode_test_set(tokenizer, pairs, maxlen, title_maxlen):
    """Sources as the run decoded them, reference ids cut to what the
    decoder can produce (`title_maxlen` tokens, end token included)."""
    sources = [
        tokenizer.encode(content, maxlen=maxlen - title_maxlen)[0]
        for _, content in pairs
    ]
    titles = [
        tokenizer.encode(title)[0][1:][:title_maxlen] for title, _ in pairs
    ]
    return sources, titles


def special_ids(tokenizer):
    """Tokens never used as wrong tokens: a title cannot contain them, and
    a wrong [SEP] would end it."""
    ids = (
        tokenizer.pad_id,
        tokenizer.unk_id,
        tokenizer.start_id,
        tokenizer.end_id,
        tokenizer.mask_id,
    )
    return sorted({i for i in ids if i is not None})


def diagnose_runs(
    run_dirs, options=None, batch_size=64, progress=False, recompute=False
):
    """`diagnose_run` for each run, after checking every folder first so
    that a typo fails at once, not after an hour of work."""
    for directory in run_dirs:
        check_run_dir(directory)
    results = []
    for number, directory in enumerate(run_dirs, 1):
        print(f"[{number}/{len(run_dirs)}] {directory}", flush=True)
        results.append(
            diagnose_run(directory, options, batch_size, progress, recompute)
        )
    return results


def diagnose_run(
    directory,
    options=None,
    batch_size=64,
    progress=False,
    recompute=False,
):
    """Diagnostics of one finished run, from its cache when still valid."""
    from data import sha256_of

    options = options or Options()
    directory = pathlib.Path(directory)
    weights = directory / "best.weights.h5"
    key = {
        "version": CACHE_VERSION,
        "options": dataclasses.asdict(options),
        "weights_sha256": sha256_of(weights) if weights.is_file() else None,
    }
    cached = _cached(directory, key) if not recompute else None
    if cached is not None:
        return cached
    run = load_finished_run(directory)
    args = run.args
    test = run.test[: options.limit] if options.limit else run.test
    sources, titles = encode_test_set(
        run.tokenizer, test, args.maxlen, args.title_maxlen
    )
    scorer = UniLMScorer(
        run.model, run.tokenizer.end_id, args.title_maxlen, batch_size
    )
    result = diagnose(
        scorer,
        sources,
        titles,
        references=[title for title, _ in test],
        decode=run.tokenizer.decode,
        options=options,
        forbidden=special_ids(run.tokenizer),
        batch_size=batch_size,
        progress=progress,
    )
    result.update(_run_fields(run, result.pop("predictions")))
    _write_cache(directory, key, result)
    return result


def _run_fields(run, predictions):
    """Who the result belongs to, and how far it agrees with the run."""
    results = run.results
    fields = {
        "dir": str(run.directory),
        "label": results["label"],
        "strategy": results["strategy"],
        "seed": results["seed"],
        "data": results.get("data"),
        "model": results.get("model"),
    }
    path = run.directory / "predictions-beam1.tsv"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        recorded = [line.split("\t")[2] for line in lines[: len(predictions)]]
        same = sum(_one_line(p) == r for p, r in zip(predictions, recorded))
        fields["greedy_equal_to_run"] = same / len(predictions)
    return fields


def _cached(directory, key):
    path = directory / CACHE_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("key") != key or "result" not in saved:
        return None
    # The folder may have moved since: name it as it is now.
    return {**saved["result"], "dir": str(directory)}


def _write_cache(directory, key, result):
    """Best effort: a read-only run directory only loses the cache."""
    from tasks.lib.rundir import atomic_write_json

    try:
        atomic_write_json(
            directory / CACHE_FILE, {"key": key, "result": result}
        )
    except OSError:
        pass
