"""How titles are decoded, and what a request may ask for.

`DecodingOptions` is one set of decoding choices (beam search with an
n-best list, or sampling), shared by `tasks/generate.py` and the server;
`check_options` refuses what the decoder cannot do, naming the field, and
`parse_request` reads a JSON request of the server into texts and options.
Nothing here imports Keras: a script's `--help` and argument errors, and
a server's request checks, stay instant.
"""

import dataclasses
import json
import math
import pathlib

from tasks.lib.cli import check_at_least
from tasks.lib.cli import fail


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """One way to decode: beam search (`beams`, the `nbest` best titles
    with their scores) or, with `sample`, `n` titles drawn with top-k /
    top-p; `min_length` and (beam search only) `length_penalty` as the
    decoder's `minlen` and GNMT α. Frozen, so that requests with equal
    options share a decoder batch (the options are the batch's key)."""

    beams: int = 1
    nbest: int = 1
    sample: bool = False
    n: int = 1
    topk: int | None = None
    topp: float | None = None
    seed: int | None = None
    length_penalty: float | None = None
    min_length: int = 1


@dataclasses.dataclass(frozen=True)
class Limits:
    """The most a request may ask for (None: no limit). The server's
    defaults keep one request from holding the decoder for long."""

    max_beams: int | None = 8
    max_samples: int | None = 8
    max_texts: int | None = 32
    max_chars: int | None = 10_000
    max_body_bytes: int = 1 << 20


NO_LIMITS = Limits(None, None, None, None)


class OptionError(ValueError):
    """A decoding option or request field that cannot be used; `field`
    names it (the JSON field; `FLAGS` maps it to the command line's)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# Request field -> command-line flag of tasks/generate.py.
FLAGS = {
    "beams": "--beams",
    "nbest": "--nbest",
    "sample": "--sample",
    "n": "-n",
    "topk": "--topk",
    "topp": "--topp",
    "seed": "--seed",
    "length_penalty": "--length-penalty",
    "min_length": "--min-length",
}
BEAM_ONLY = ("beams", "nbest", "length_penalty")
SAMPLE_ONLY = ("n", "topk", "topp", "seed")


def check_options(
    options: DecodingOptions,
    limits: Limits,
    title_maxlen: int,
    vocab_size: int,
) -> None:
    """Raise `OptionError` for the first option out of range."""
    o = options
    _at_least("min_length", o.min_length, 1, title_maxlen)
    if o.sample:
        _at_least("n", o.n, 1, limits.max_samples)
        if o.topk is not None:
            _at_least("topk", o.topk, 1, vocab_size)
        if o.topp is not None and not 0 < o.topp <= 1:
            raise OptionError("topp", f"{o.topp}: expected 0 < topp <= 1")
        if o.seed is not None:
            _at_least("seed", o.seed, 0, 2**32 - 1)
        return
    _at_least("beams", o.beams, 1, _smaller(limits.max_beams, vocab_size))
    if o.nbest > o.beams:
        raise OptionError(
            "nbest", f"{o.nbest}: expected at most beams ({o.beams})"
        )
    _at_least("nbest", o.nbest, 1)
    penalty = o.length_penalty
    if penalty is not None and not (
        math.isfinite(penalty) and -5 <= penalty <= 5
    ):
        raise OptionError(
            "length_penalty", f"{penalty}: expected a number from -5 to 5"
        )


def _smaller(limit, other):
    return other if limit is None else min(limit, other)


def _at_least(field, value, least, most=None):
    if value < least or (most is not None and value > most):
        bound = f"from {least} to {most}" if most is not None else f"{least}"
        expected = bound if most is not None else f"{least} or more"
        raise OptionError(field, f"{value}: expected {expected}")


def mode_conflicts(given: dict, sample: bool) -> str | None:
    """The first field given that does not apply to the mode (sampling
    or beam search), or None: such a field would be silently ignored."""
    wrong = BEAM_ONLY if sample else SAMPLE_ONLY
    for field in wrong:
        if given.get(field) is not None:
            return field
    return None


# Requests of the server ---------------------------------------------------

# JSON field -> (accepted Python types, what the error says was expected).
INTEGER = ((int,), "an integer")
NUMBER = ((int, float), "a number")
FIELD_TYPES = {
    "beams": INTEGER,
    "nbest": INTEGER,
    "sample": ((bool,), "true or false"),
    "n": INTEGER,
    "topk": INTEGER,
    "topp": NUMBER,
    "seed": INTEGER,
    "length_penalty": NUMBER,
    "min_length": INTEGER,
}
TEXT_FIELDS = ("text", "texts")


def parse_request(
    body: object,
    defaults: DecodingOptions,
    limits: Limits,
    title_maxlen: int,
    vocab_size: int,
) -> tuple[list[str], DecodingOptions]:
    """Texts and options of a `POST /generate` body (already JSON-decoded):
    `{"text": "..."}` or `{"texts": [...]}` plus any option field; fields
    left out take `defaults`. Raises `OptionError` naming the field."""
    if not isinstance(body, dict):
        raise OptionError("body", "expected a JSON object")
    unknown = sorted(set(body) - set(FIELD_TYPES) - set(TEXT_FIELDS))
    if unknown:
        known = ", ".join((*TEXT_FIELDS, *FIELD_TYPES))
        raise OptionError(unknown[0], f"unknown field (known: {known})")
    texts = _texts(body, limits)
    given = {}
    for field, (types, expected) in FIELD_TYPES.items():
        value = body.get(field)
        if value is None:
            continue
        if not _is_type(value, types):
            got = json.dumps(value, ensure_ascii=False)
            raise OptionError(field, f"expected {expected}, got {got}")
        given[field] = value
    sample = given.get("sample", defaults.sample)
    conflict = mode_conflicts(given, sample)
    if conflict:
        mode = "sampling" if sample else "beam search"
        raise OptionError(conflict, f"does not apply to {mode}")
    options = dataclasses.replace(defaults, **given)
    check_options(options, limits, title_maxlen, vocab_size)
    return texts, options


def _is_type(value, types):
    # bool is an int to Python, not to a client: `"beams": true` is wrong.
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _texts(body, limits):
    given = [field for field in TEXT_FIELDS if field in body]
    if len(given) != 1:
        raise OptionError(
            "text", 'expected one of "text" (a string) or "texts" (a list)'
        )
    if "text" in body:
        texts, names = [body["text"]], ["text"]
        if not isinstance(texts[0], str):
            raise OptionError("text", "expected a string")
    else:
        texts = body["texts"]
        if not isinstance(texts, list) or not texts:
            raise OptionError("texts", "expected a non-empty list of strings")
        if limits.max_texts is not None and len(texts) > limits.max_texts:
            raise OptionError(
                "texts",
                f"{len(texts)} texts: expected at most {limits.max_texts}",
            )
        names = [f"texts[{i}]" for i in range(len(texts))]
    for name, text in zip(names, texts):
        if not isinstance(text, str):
            raise OptionError(name, "expected a string")
        if not text.strip():
            raise OptionError(name, "empty text")
        if limits.max_chars is not None and len(text) > limits.max_chars:
            raise OptionError(
                name,
                f"{len(text)} characters: expected at most {limits.max_chars}",
            )
    return texts


# Command lines of tasks/generate.py and tasks/serve.py ---------------------


def add_model_arguments(parser) -> None:
    """RUN_OR_MODEL_DIR, and the lengths a model directory needs."""
    parser.add_argument(
        "model",
        metavar="RUN_OR_MODEL_DIR",
        help="a finished run (--out of a task script) or a model directory "
        "(config, vocab.txt, checkpoint)",
    )
    group = parser.add_argument_group("model directory only")
    group.add_argument(
        "--maxlen",
        type=int,
        help="max tokens of abstract + title (default 256)",
    )
    group.add_argument(
        "--title-maxlen", type=int, help="max title tokens (default 32)"
    )


def check_model_arguments(args) -> None:
    """A directory that exists, and positive lengths: before Keras loads."""
    check_at_least({"--maxlen": (args.maxlen, 2)})
    check_at_least({"--title-maxlen": (args.title_maxlen, 1)})
    directory = pathlib.Path(args.model)
    if not directory.is_dir():
        what = "not a directory" if directory.exists() else "no such directory"
        fail(f"{directory}: {what}")
