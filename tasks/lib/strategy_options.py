"""A training strategy from the command line: `--strategy NAME` with its
`--strategy-option KEY=VALUE`s checked against the strategy's fields, and
the options a run records (every one, and those the user gave).

A strategy is a dataclass (`models.strategies`): its init fields are its
options, their types and defaults what a wrong key lists.
"""

import dataclasses

from models.strategies import STRATEGIES
from tasks.lib.cli import fail


def parse_strategy_options(
    items: list[str], flag: str = "--strategy-option"
) -> dict:
    """`['token_rate=0.3']` -> `{'token_rate': 0.3}` (numbers parsed)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{flag} {item!r}: expected KEY=VALUE")
        options[key] = _parse_value(value)
    return options


def _parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_strategy(name: str, items: list[str], flag: str = "--strategy-option"):
    """The strategy `name` with its `KEY=VALUE` options, checked: an
    unknown key lists the valid ones with their types and defaults, a
    value of the wrong type or range names the option."""
    if name not in STRATEGIES:
        fail(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    options = parse_strategy_options(items, flag)
    for key, value in options.items():
        if key not in fields:
            fail(
                f"{flag} {key}: {name} has no option {key!r}; "
                f"valid: {describe_options(cls) or 'none'}"
            )
        options[key] = _coerce(flag, key, value, fields[key].type)
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        given = ", ".join(f"{k}={v}" for k, v in options.items())
        fail(f"{flag} {given}: {error}")


def describe_options(cls) -> str:
    """'token_rate (float, default 0.3), ...' of a strategy class."""
    return ", ".join(
        f"{f.name} ({_type_name(f.type)}, default {f.default!r})"
        for f in dataclasses.fields(cls)
        if f.init
    )


def _type_name(kind):
    return getattr(kind, "__name__", None) or str(kind)


def _coerce(flag, key, value, kind):
    """A parsed option value as its field's type (int -> float is fine)."""
    if kind is float and isinstance(value, int):
        return float(value)
    if kind is str and not isinstance(value, str):
        return str(value)
    if kind in (int, float) and not isinstance(value, kind):
        fail(f"{flag} {key}={value}: expected {kind.__name__}")
    return value


def strategy_options(strategy) -> dict:
    """Every option of a strategy object, defaults included (JSON-ready)."""
    return {
        f.name: _jsonable(getattr(strategy, f.name))
        for f in dataclasses.fields(strategy)
        if f.init
    }


def given_options(strategy, args) -> dict:
    """The options the command line set, as the strategy holds them."""
    every = strategy_options(strategy)
    given = parse_strategy_options(args.strategy_option)
    return {key: every[key] for key in given}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
