"""Exposure-bias diagnostics of finished runs.

A run directory of `tasks/csl_title.py` or `tasks/lcsts_summary.py` is
rebuilt from the settings it saved (tokenizer, test split, best model),
checked to be the run that was scored (data checksums, the references of
its predictions files), and measured with `tasks.lib.diagnostics` through
`UniLMScorer`, the UniLM model as a `DiagnosticModel`. Each run's result
is cached in RUN_DIR/diagnostics.json, keyed by the options and the
checksum of best.weights.h5.
"""

import argparse
import dataclasses
import pathlib

import numpy as np
from keras import ops

from data import sha256_of
from models.backend import compile_function
from models.decoding import Seq2SeqDecoder
from models.t5 import MODEL_TYPES as T5_MODEL_TYPES
from tasks.lib.atomic import atomic_write_json
from tasks.lib.atomic import atomic_write_text
from tasks.lib.diagnostics import Options
from tasks.lib.diagnostics import diagnose
from tasks.lib.diagnostics_report import aggregate
from tasks.lib.diagnostics_report import sections
from tasks.lib.diagnostics_report import write_report
from tasks.lib.runs import DIAGNOSTICS_FILE
from tasks.lib.runs import Run
from tasks.lib.runs import one_line
from tasks.lib.runs import run_family
from tasks.lib.splits import load_splits
from tasks.lib.trained_model import load_trained

CACHE_VERSION = 1
NOT_FOR_ENCODER_DECODER = (
    "exposure-bias diagnostics not computed for an encoder-decoder (T5 / "
    "mT5): they score titles through the UniLM model's one-stack pass "
    "(UniLMScorer), which a T5 model does not have"
)


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
        return ops.convert_to_numpy(logp)[:count]

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
        hidden = self.network(token_ids, segment_ids, output="hidden")
        hidden = ops.take_along_axis(hidden, positions[..., None], axis=1)
        logits = ops.cast(self.network.mlm_logits(hidden), "float32")
        return ops.log_softmax(logits, axis=-1)


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


# Finished runs ----------------------------------------------------------------


@dataclasses.dataclass
class RunInputs:
    """A finished run rebuilt: the run, its settings, model and test set."""

    run: Run
    args: argparse.Namespace
    model: object
    tokenizer: object
    test: list


def check_run_dir(directory) -> tuple[Run, argparse.Namespace]:
    """(run, settings) of a finished run, or an error naming what is
    missing; cheap, so every folder can be checked before the slow work."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    run = Run.load(directory)
    args = run.settings()
    weights = directory / "best.weights.h5"
    if not weights.is_file():
        raise FileNotFoundError(
            f"{weights}: missing (the run finished no epoch, or was moved "
            "without it)"
        )
    return run, args


def rebuild(run: Run, args: argparse.Namespace) -> RunInputs:
    """Rebuild the run's tokenizer, test split and best model.

    Uses the run's own model files and data helpers with the saved settings,
    then checks that the test set is the one the run scored (data
    checksums and the references of its predictions files).
    """
    try:
        return _rebuild(run, args)
    except SystemExit as error:
        # The task's own checks exit with a message; name the run instead.
        raise ValueError(f"{run.directory}: {error}") from None


def _rebuild(run, args):
    (_, _, test), data_info = load_splits(args)
    _check_data(run.directory, run.results.get("data"), data_info)
    _check_predictions(run, test)
    model, tokenizer = load_trained(run, args)
    return RunInputs(run, args, model, tokenizer, test)


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


def _check_predictions(run, test):
    """The rebuilt test references must be those the run's predictions
    files list, line by line (catches changed data or data code)."""
    for beam, rows in run.predictions.items():
        path = run.predictions_path(beam)
        if len(rows) != len(test):
            raise ValueError(
                f"{path}: {len(rows)} test titles, but the settings in "
                f"config.json rebuild {len(test)}: data changed since the run"
            )
        for number, (row, (title, _)) in enumerate(zip(rows, test), 2):
            if row.reference != one_line(title):
                raise ValueError(
                    f"{path}, line {number}: reference differs from the "
                    "rebuilt test set: data changed since the run"
                )


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
    run_dirs = diagnosable(run_dirs)
    results = []
    for number, directory in enumerate(run_dirs, 1):
        print(f"[{number}/{len(run_dirs)}] {directory}", flush=True)
        results.append(
            diagnose_run(directory, options, batch_size, progress, recompute)
        )
    return results


def diagnosable(run_dirs) -> list:
    """The runs the diagnostics measure; an encoder-decoder's is passed
    over in one printed line (none left: ValueError, one line)."""
    kept = []
    for directory in run_dirs:
        run, _ = check_run_dir(directory)
        if run_family(run.results) in T5_MODEL_TYPES:
            print(f"{directory}: {NOT_FOR_ENCODER_DECODER}", flush=True)
        else:
            kept.append(directory)
    if not kept:
        raise ValueError(
            f"{', '.join(map(str, run_dirs))}: {NOT_FOR_ENCODER_DECODER}"
        )
    return kept


def diagnose_run(
    directory,
    options=None,
    batch_size=64,
    progress=False,
    recompute=False,
):
    """Diagnostics of one finished run, from its cache when still valid."""
    options = options or Options()
    run, args = check_run_dir(directory)
    key = {
        "version": CACHE_VERSION,
        "options": dataclasses.asdict(options),
        "weights_sha256": sha256_of(run.directory / "best.weights.h5"),
    }
    cached = _cached(run, key) if not recompute else None
    if cached is not None:
        return cached
    result = diagnose_inputs(rebuild(run, args), options, batch_size, progress)
    _write_cache(run.directory, key, result)
    return result


def diagnose_inputs(inputs, options, batch_size=64, progress=False):
    """The three diagnostics of a rebuilt run, with who it is and how far
    its greedy titles agree with those it wrote."""
    args, tokenizer = inputs.args, inputs.tokenizer
    test = inputs.test[: options.limit] if options.limit else inputs.test
    sources, titles = encode_test_set(
        tokenizer, test, args.maxlen, args.title_maxlen
    )
    scorer = UniLMScorer(
        inputs.model, tokenizer.end_id, args.title_maxlen, batch_size
    )
    result = diagnose(
        scorer,
        sources,
        titles,
        references=[title for title, _ in test],
        decode=tokenizer.decode,
        options=options,
        forbidden=special_ids(tokenizer),
        batch_size=batch_size,
        progress=progress,
    )
    result.update(_run_fields(inputs.run, result.pop("predictions")))
    return result


def _run_fields(run, predictions):
    """Who the result belongs to, and how far it agrees with the run."""
    results = run.results
    fields = {
        "dir": str(run.directory),
        "label": run.label,
        "strategy": results["strategy"],
        "seed": results["seed"],
        "data": results.get("data"),
        "model": results.get("model"),
    }
    if 1 in run.predictions:
        rows = run.predictions[1][: len(predictions)]
        same = sum(
            one_line(p) == row.prediction for p, row in zip(predictions, rows)
        )
        fields["greedy_equal_to_run"] = same / len(predictions)
    return fields


def _cached(run, key):
    saved = run.diagnostics
    if saved is None or saved.get("key") != key or "result" not in saved:
        return None
    # The folder may have moved since: name it as it is now.
    return {**saved["result"], "dir": str(run.directory)}


def _write_cache(directory, key, result):
    """Best effort: a read-only run directory only loses the cache."""
    try:
        atomic_write_json(
            directory / DIAGNOSTICS_FILE, {"key": key, "result": result}
        )
    except (OSError, ValueError):  # ValueError: a NaN, not JSON
        pass


def add_to_comparison(run_dirs, report_dir, progress=True):
    """`compare.py --diagnostics`: diagnose the runs (default options, the
    per-run cache reused) into REPORT/diagnostics/ and append the tables
    and figures to REPORT/table.md; returns the appended Markdown."""
    options = Options()
    results = diagnose_runs(run_dirs, options, progress=progress)
    report_dir = pathlib.Path(report_dir)
    write_report(
        results, report_dir / "diagnostics", dataclasses.asdict(options)
    )
    section = (
        "\n## Exposure-bias diagnostics\n\n"
        "Per-run checks, CSV and JSON: "
        "[diagnostics/diagnostics.md](diagnostics/diagnostics.md).\n\n"
        + sections(aggregate(results), prefix="diagnostics/", level=3)
    )
    table = report_dir / "table.md"
    before = table.read_text(encoding="utf-8") if table.exists() else ""
    atomic_write_text(table, before + section)
    return section
